/* Configuration: every FDGUARD_* variable is read and validated here, once,
 * at load. A bad value is reported in one line and the default is used: the
 * host process must run whatever its environment says. The line is not
 * written now but when the process engages (log.c keeps it until then), so
 * that sh, env and every other child that inherits the environment and
 * never needs the shim says nothing.
 *
 * Secure execution (AT_SECURE: setuid, setgid, file capabilities) means the
 * environment was chosen by a less privileged caller: paths from it are not
 * used (no log file, no stats file; the IPC registry is not written). */
#include "fdguard.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

struct fdg_config fdg_cfg = {
    .enabled = true,
    .accept = true,
    .accept_errno = EAGAIN,
    .epoll = true,
    .dlopen = FDG_DLOPEN_KEEP,
    .dlopen_keep = 64,
    .dlopen_retries = 4,
    .backoff_max_ms = 100,
    .log_target = FDG_LOG_STDERR,
    .log_level = FDG_LVL_WARN,
};

static void bad_value(const char *var, const char *value, const char *expected, const char *dflt)
{
    fdg_logf(FDG_LVL_WARN, FDG_EV_CONFIG, "%-s=\"%s\" is invalid (expected %-s); using %-s", var,
             value, expected, dflt);
}

/* Index of value in the NULL-terminated names, or -1 (reported). */
static int parse_choice(const char *var, const char *const names[], int dflt)
{
    const char *value = getenv(var);
    if (!value) return dflt;
    for (int i = 0; names[i]; i++)
        if (strcmp(value, names[i]) == 0) return i;
    char expected[128] = "";
    size_t used = 0;
    for (int i = 0; names[i]; i++)
        used += fdg_formatf(expected + used, sizeof expected - used, "%s%s", i ? ", " : "one of ",
                            names[i]);
    bad_value(var, value, expected, names[dflt]);
    return dflt;
}

static bool parse_switch(const char *var, bool dflt)
{
    static const char *const names[] = {"off", "on", NULL};
    return parse_choice(var, names, dflt) == 1;
}

static unsigned parse_uint(const char *var, unsigned lo, unsigned hi, unsigned dflt)
{
    const char *value = getenv(var);
    if (!value) return dflt;
    char *end;
    errno = 0;
    unsigned long n = strtoul(value, &end, 10);
    if (value[0] >= '0' && value[0] <= '9' && *end == '\0' && errno == 0 && n >= lo && n <= hi)
        return (unsigned)n;
    char expected[64], shown[16];
    fdg_formatf(expected, sizeof expected, "an integer in %u..%u", lo, hi);
    fdg_formatf(shown, sizeof shown, "%u", dflt);
    bad_value(var, value, expected, shown);
    return dflt;
}

static bool copy_path(const char *var, const char *value, char *out)
{
    size_t len = strlen(value);
    if (value[0] != '/' || len >= FDG_PATH_MAX) {
        bad_value(var, value, "an absolute path", "the default");
        return false;
    }
    memcpy(out, value, len + 1);
    return true;
}

/* FDGUARD_ONLY=prog1,prog2: guard only programs of these names. */
static bool program_listed(const char *list)
{
    const char *prog = fdg_prog_name();
    size_t prog_len = strlen(prog);
    for (const char *p = list; *p;) {
        const char *comma = strchrnul(p, ',');
        if ((size_t)(comma - p) == prog_len && memcmp(p, prog, prog_len) == 0) return true;
        p = *comma ? comma + 1 : comma;
    }
    return false;
}

/* Decodes FDGUARD_REJECT_MSG escapes; false (and *err set) on a bad one. */
static bool unescape(const char *in, char *out, size_t cap, size_t *outlen, const char **err)
{
    size_t n = 0;
    for (const char *p = in; *p; p++) {
        char c = *p;
        if (c == '\\') {
            switch (*++p) {
            case 'r':
                c = '\r';
                break;
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case '\\':
                c = '\\';
                break;
            case 'x': {
                int v = 0;
                for (int i = 0; i < 2; i++) {
                    char h = *++p;
                    int d = h >= '0' && h <= '9'   ? h - '0'
                            : h >= 'a' && h <= 'f' ? h - 'a' + 10
                            : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                                   : -1;
                    if (d < 0) {
                        *err = "\\xHH with two hex digits";
                        return false;
                    }
                    v = v * 16 + d;
                }
                c = (char)v;
                break;
            }
            default:
                *err = "only the escapes \\r \\n \\t \\\\ \\xHH";
                return false;
            }
        }
        if (n == cap) {
            *err = "at most 1024 bytes";
            return false;
        }
        out[n++] = c;
    }
    *outlen = n;
    return true;
}

static void ignored_in_secure_mode(const char *var, const char *value, const char *instead)
{
    fdg_logf(FDG_LVL_WARN, FDG_EV_CONFIG,
             "%-s=\"%s\" is ignored: this is a secure-execution process (setuid, setgid or "
             "capabilities), whose environment another user chose; %-s",
             var, value, instead);
}

static void load_log(void)
{
    static const char *const levels[] = {"quiet", "error", "warn", "info", "debug", NULL};
    fdg_cfg.log_level = parse_choice("FDGUARD_LOG_LEVEL", levels, FDG_LVL_WARN);
    const char *log = getenv("FDGUARD_LOG");
    if (!log || strcmp(log, "stderr") == 0) return;
    if (strcmp(log, "syslog") == 0)
        fdg_cfg.log_target = FDG_LOG_SYSLOG;
    else if (log[0] == '/' && strlen(log) < FDG_PATH_MAX && fdg_cfg.secure)
        ignored_in_secure_mode("FDGUARD_LOG", log, "logging to stderr");
    else if (log[0] == '/' && strlen(log) < FDG_PATH_MAX)
        fdg_cfg.log_target = FDG_LOG_FILE, strcpy(fdg_cfg.log_path, log);
    else
        bad_value("FDGUARD_LOG", log, "stderr, syslog or an absolute path", "stderr");
}

void fdg_config_load(void)
{
    /* Whether we guard at all comes first: an unguarded program must not
     * even be told about bad values meant for another one. */
    const char *only = getenv("FDGUARD_ONLY");
    const char *on = getenv("FDGUARD");
    if ((only && *only && !program_listed(only)) || (on && strcmp(on, "off") == 0)) {
        fdg_cfg.enabled = false;
        return;
    }
    fdg_cfg.secure = getauxval(AT_SECURE) != 0;
    load_log();
    fdg_cfg.enabled = parse_switch("FDGUARD", true);

    fdg_cfg.accept = parse_switch("FDGUARD_ACCEPT", true);
    static const char *const accept_errnos[] = {"EAGAIN", "EMFILE", NULL};
    fdg_cfg.accept_errno = parse_choice("FDGUARD_ACCEPT_ERRNO", accept_errnos, 0) ? 0 : EAGAIN;
    fdg_cfg.headroom = parse_uint("FDGUARD_HEADROOM", 0, 1048576, 0);

    const char *msg = getenv("FDGUARD_REJECT_MSG");
    const char *why;
    if (msg &&
        !unescape(msg, fdg_cfg.reject_msg, sizeof fdg_cfg.reject_msg, &fdg_cfg.reject_len, &why)) {
        fdg_cfg.reject_len = 0;
        bad_value("FDGUARD_REJECT_MSG", msg, why, "no message");
    }

    fdg_cfg.epoll = parse_switch("FDGUARD_EPOLL", true);
    fdg_cfg.epollexclusive = parse_switch("FDGUARD_EPOLLEXCLUSIVE", false);

    static const char *const dlopen_modes[] = {"keep", "cache", "off", NULL};
    fdg_cfg.dlopen = (enum fdg_dlopen_mode)parse_choice("FDGUARD_DLOPEN", dlopen_modes, 0);
    fdg_cfg.dlopen_keep = parse_uint("FDGUARD_DLOPEN_KEEP", 1, 65536, 64);
    fdg_cfg.dlopen_retries = parse_uint("FDGUARD_DLOPEN_RETRIES", 0, 100, 4);
    fdg_cfg.backoff_max_ms = parse_uint("FDGUARD_BACKOFF_MAX_MS", 1, 60000, 100);

    const char *stats = getenv("FDGUARD_STATS");
    if (stats && *stats && fdg_cfg.secure)
        ignored_in_secure_mode("FDGUARD_STATS", stats, "counters stay private");
    else if (stats && *stats)
        copy_path("FDGUARD_STATS", stats, fdg_cfg.stats_path);
}
