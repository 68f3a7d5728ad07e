/* Capped exponential backoff with jitter, for waits whose end we cannot see
 * (a spare taken by another thread, ENOBUFS from accept, a transient loader
 * failure). Jitter keeps threads that failed together from retrying together.
 * And the clock every wait of the shim is measured with. */
#include "fdguard.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

uint64_t fdg_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static __thread uint32_t rng_state __attribute__((tls_model("initial-exec")));

static uint32_t next_random(void)
{
    uint32_t x = rng_state;
    if (x == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = (uint32_t)ts.tv_nsec ^ ((uint32_t)(uintptr_t)&rng_state << 7) ^ 0x9e3779b9u;
    }
    /* xorshift32 */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rng_state = x;
    return x;
}

uint64_t fdg_backoff_us(unsigned attempt)
{
    uint64_t cap_us = (uint64_t)fdg_cfg.backoff_max_ms * 1000;
    uint64_t step_us = attempt >= 20 ? cap_us : (uint64_t)1000 << attempt;
    if (step_us > cap_us) step_us = cap_us;
    return step_us / 2 + next_random() % (step_us / 2 + 1);
}

void fdg_backoff_sleep(unsigned attempt)
{
    uint64_t us = fdg_backoff_us(attempt);
    struct timespec ts = {.tv_sec = (time_t)(us / 1000000), .tv_nsec = (long)(us % 1000000) * 1000};
    int saved = errno;
    /* An interrupted sleep just ends early: the caller retries anyway. It is
     * a cancellation point, as the blocking call it stands in for. */
    nanosleep(&ts, NULL);
    errno = saved;
}
