/* Choosing the return gadget for a call "as the caller" (dlcaller.c).
 *
 * The real dlopen is entered with a return address inside the caller's
 * object: a byte 0xc3 (ret) there, which returns into our trampoline. The
 * CPU only needs the byte; the unwinder (libgcc's, gdb's, a profiler's) also
 * computes a frame for that address, from the caller's own CFI: the row in
 * effect at gadget-1 (a return address is looked up one byte back). A byte
 * picked at random gives a garbage frame and the backtrace stops there. So
 * the gadget is a 0xc3 whose row is one the trampoline can satisfy:
 *
 *   FDG_GADGET_RBP  CFA = rbp + 16, rbp at CFA-16, return address at CFA-8,
 *                   any other saved register at the slot where the entry
 *                   stub (dlentry.c) keeps the application's value of it
 *                   (rbx -24, r12 -32 ... r15 -56). A frame-pointer
 *                   epilogue (`leave; ret`, `pop %rbp; ret`). With rbp
 *                   pointed at the stub's saved rbp, the gadget's frame
 *                   unwinds straight into the application's caller.
 *   FDG_GADGET_RSP  CFA = rsp + 8, nothing saved: a frameless function.
 *                   The gadget's frame unwinds into the trampoline, whose
 *                   CFI leads to the application's caller.
 *   FDG_GADGET_BARE any 0xc3 byte (the object has no usable CFI): the
 *                   unwinder stops at the gadget, as it would have stopped
 *                   at the caller itself in an object without CFI.
 *
 * The CFI comes from the object's .eh_frame_hdr (the same search table
 * libgcc's unwinder uses, found with _dl_find_object). Functions with a
 * language-specific data area are skipped: a C++ personality would call
 * std::terminate for an address outside its call-site table. The choice is
 * cached per object and checked again (one FDE) before each use, since an
 * object may have been replaced at the same address.
 *
 * Reading someone else's pages. A file overwritten in place (cp over a
 * library) loses every page past its new end, and a read of one raises
 * SIGBUS; the protection may make code unreadable whatever the ELF flags
 * say (execute-only memory with protection keys). So code bytes are read
 * with process_vm_readv on ourselves (read_code), which fails with EFAULT
 * instead, and only ever a chunk at a time; and before the unwind tables and
 * headers are parsed in place, the object's last file-backed byte is read
 * the same way: a file cut anywhere below it fails the search (the call is
 * then passed straight through, uncached). */
#include "fdguard.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

/* ---- reading the object's pages ---------------------------------------------- */

/* Where process_vm_readv is refused, the bytes are read directly, as any
 * unwinder would. */
static bool read_code(uintptr_t addr, void *buf, size_t len)
{
    int r = fdg_read_self((const void *)addr, buf, len);
    if (r < 0) memcpy(buf, (const void *)addr, len);
    return r != 0;
}

/* The first 0xc3 byte in [lo, hi), read a chunk at a time; 0 if none, or if
 * a chunk cannot be read. */
static uintptr_t find_ret(uintptr_t lo, uintptr_t hi)
{
    unsigned char chunk[4096];
    while (lo < hi) {
        size_t n = sizeof chunk - (lo & (sizeof chunk - 1)); /* up to a page boundary */
        if (n > hi - lo) n = hi - lo;
        if (!read_code(lo, chunk, n)) return 0;
        const unsigned char *g = memchr(chunk, 0xc3, n);
        if (g) return lo + (uintptr_t)(g - chunk);
        lo += n;
    }
    return 0;
}

static bool is_ret(uintptr_t addr)
{
    unsigned char c;
    return read_code(addr, &c, 1) && c == 0xc3;
}

/* ---- reading DWARF ---------------------------------------------------------- */

enum {
    PE_ABSPTR = 0x00,
    PE_ULEB128 = 0x01,
    PE_UDATA2 = 0x02,
    PE_UDATA4 = 0x03,
    PE_UDATA8 = 0x04,
    PE_SLEB128 = 0x09,
    PE_SDATA2 = 0x0a,
    PE_SDATA4 = 0x0b,
    PE_SDATA8 = 0x0c,
    PE_PCREL = 0x10,
    PE_DATAREL = 0x30,
    PE_INDIRECT = 0x80,
    PE_OMIT = 0xff,
};

struct cursor {
    const unsigned char *p, *end;
    bool bad;
};

static uint64_t u8_at(struct cursor *c)
{
    if (c->p >= c->end) {
        c->bad = true;
        return 0;
    }
    return *c->p++;
}

static uint64_t fixed(struct cursor *c, size_t n)
{
    uint64_t v = 0;
    if ((size_t)(c->end - c->p) < n) {
        c->bad = true;
        return 0;
    }
    memcpy(&v, c->p, n); /* x86-64: little endian, unaligned loads are fine */
    c->p += n;
    return v;
}

static uint64_t uleb(struct cursor *c)
{
    uint64_t v = 0;
    for (unsigned shift = 0; !c->bad; shift += 7) {
        uint64_t b = u8_at(c);
        if (shift < 64) v |= (b & 0x7f) << shift;
        if (!(b & 0x80)) break;
    }
    return v;
}

static int64_t sleb(struct cursor *c)
{
    uint64_t v = 0, b = 0;
    unsigned shift = 0;
    do {
        b = u8_at(c);
        if (shift < 64) v |= (b & 0x7f) << shift;
        shift += 7;
    } while ((b & 0x80) && !c->bad);
    if (shift < 64 && (b & 0x40)) v |= ~UINT64_C(0) << shift;
    return (int64_t)v;
}

/* A pointer in encoding enc; datarel is relative to `data`. */
static uint64_t encoded(struct cursor *c, unsigned enc, uintptr_t data)
{
    uintptr_t at = (uintptr_t)c->p;
    uint64_t v;
    switch (enc & 0x0f) {
    case PE_ABSPTR:
        v = fixed(c, 8);
        break;
    case PE_ULEB128:
        v = uleb(c);
        break;
    case PE_UDATA2:
        v = fixed(c, 2);
        break;
    case PE_UDATA4:
        v = fixed(c, 4);
        break;
    case PE_UDATA8:
        v = fixed(c, 8);
        break;
    case PE_SLEB128:
        v = (uint64_t)sleb(c);
        break;
    case PE_SDATA2:
        v = (uint64_t)(int64_t)(int16_t)fixed(c, 2);
        break;
    case PE_SDATA4:
        v = (uint64_t)(int64_t)(int32_t)fixed(c, 4);
        break;
    case PE_SDATA8:
        v = fixed(c, 8);
        break;
    default:
        c->bad = true;
        return 0;
    }
    switch (enc & 0x70) {
    case 0:
        break;
    case PE_PCREL:
        v += at;
        break;
    case PE_DATAREL:
        v += data;
        break;
    default:
        c->bad = true;
        return 0;
    }
    return v; /* PE_INDIRECT: only the personality uses it, and we skip it */
}

/* ---- CIE and FDE ------------------------------------------------------------ */

struct cie {
    uint64_t code_align;
    int64_t data_align;
    unsigned fde_enc, lsda_enc;
    bool augmented; /* 'z': FDEs carry augmentation data */
    const unsigned char *insns, *insns_end;
};

/* Parses the CIE at p; false for anything we do not understand. */
static bool parse_cie(const unsigned char *p, struct cie *cie)
{
    uint32_t len;
    memcpy(&len, p, 4);
    if (len == 0 || len == 0xffffffffu) return false;
    struct cursor c = {p + 4, p + 4 + len, false};
    if (fixed(&c, 4) != 0) return false; /* CIE id */
    uint64_t version = u8_at(&c);
    if (version != 1 && version != 3) return false;
    const char *aug = (const char *)c.p;
    size_t aug_len = strnlen(aug, (size_t)(c.end - c.p));
    if (aug_len == (size_t)(c.end - c.p)) return false;
    c.p += aug_len + 1;
    cie->code_align = uleb(&c);
    cie->data_align = sleb(&c);
    uint64_t ra = version == 1 ? u8_at(&c) : uleb(&c);
    if (ra != 16) return false;
    cie->fde_enc = PE_ABSPTR;
    cie->lsda_enc = PE_OMIT;
    cie->augmented = aug[0] == 'z';
    if (aug[0] && !cie->augmented) return false;
    if (cie->augmented) {
        uint64_t n = uleb(&c);
        if (c.bad || n > (uint64_t)(c.end - c.p)) return false;
        const unsigned char *after = c.p + n;
        for (const char *a = aug + 1; *a; a++) {
            if (*a == 'R') {
                cie->fde_enc = (unsigned)u8_at(&c);
            } else if (*a == 'L') {
                cie->lsda_enc = (unsigned)u8_at(&c);
            } else if (*a == 'P') {
                unsigned enc = (unsigned)u8_at(&c);
                encoded(&c, enc & ~PE_INDIRECT, 0);
            } else {
                return false; /* 'S' (signal frame) and anything unknown */
            }
        }
        c.p = after;
    }
    if (c.bad) return false;
    cie->insns = c.p;
    cie->insns_end = c.end;
    return true;
}

/* ---- CFI rows --------------------------------------------------------------- */

enum { NREGS = 17, RA = 16, RSP = 7, RBP = 6 };
enum rule { R_UNSAVED, R_SAME, R_OFFSET, R_OTHER };

struct row {
    int cfa_reg; /* -1: an expression */
    int64_t cfa_off;
    unsigned char rule[NREGS];
    int64_t off[NREGS];
};

/* Offset from the CFA of each callee-saved register in the entry stub's
 * block (dlentry.c pushes rbp, rbx, r12 ... r15 under the return address). */
static int64_t block_slot(int reg)
{
    switch (reg) {
    case 3:
        return -24; /* rbx */
    case 6:
        return -16; /* rbp */
    case 12:
        return -32;
    case 13:
        return -40;
    case 14:
        return -48;
    case 15:
        return -56;
    default:
        return 0;
    }
}

static int classify(const struct row *r)
{
    if (r->rule[RA] != R_OFFSET || r->off[RA] != -8) return FDG_GADGET_NONE;
    if (r->cfa_reg == RSP && (r->cfa_off == 8 || r->cfa_off == 16)) {
        for (int i = 0; i < RA; i++)
            if (r->rule[i] != R_UNSAVED && r->rule[i] != R_SAME) return FDG_GADGET_NONE;
        return r->cfa_off == 8 ? FDG_GADGET_RSP8 : FDG_GADGET_RSP16;
    }
    if (r->cfa_reg == RBP && r->cfa_off == 16) {
        if (r->rule[RBP] != R_OFFSET || r->off[RBP] != -16) return FDG_GADGET_NONE;
        for (int i = 0; i < RA; i++) {
            if (r->rule[i] == R_UNSAVED || r->rule[i] == R_SAME) continue;
            if (r->rule[i] != R_OFFSET || block_slot(i) == 0 || r->off[i] != block_slot(i))
                return FDG_GADGET_NONE;
        }
        return FDG_GADGET_RBP;
    }
    return FDG_GADGET_NONE;
}

/* The object's segments we may read code bytes from: executable and
 * readable (an execute-only mapping would fault on the read); and where its
 * last file-backed byte is. */
enum { MAX_SEGMENTS = 8 };
struct segments {
    unsigned n;
    uintptr_t lo[MAX_SEGMENTS], hi[MAX_SEGMENTS];
    uintptr_t file_end;
};

static bool readable_code(const struct segments *code, uintptr_t lo, uintptr_t hi)
{
    for (unsigned i = 0; i < code->n; i++)
        if (lo >= code->lo[i] && hi <= code->hi[i]) return true;
    return false;
}

/* What a scan of one FDE looks for: the first gadget of kind `want` (or the
 * kind of the one at `at`), inside [lo, hi) (the FDE's range, cut where the
 * next FDE of the search table begins). */
struct want {
    int kind;
    uintptr_t at; /* checking: only this address */
    uintptr_t found;
    const struct segments *code;
};

/* The row holds for [from, to): a gadget G needs G-1 in there, G in range. */
static bool scan_span(const struct row *r, uintptr_t from, uintptr_t to, uintptr_t lo, uintptr_t hi,
                      struct want *w)
{
    if (from < lo) from = lo;
    if (to > hi) to = hi;
    if (from >= to || classify(r) != w->kind) return false;
    uintptr_t first = from + 1, last = to; /* G in [from+1, to], G < hi */
    if (last >= hi) last = hi - 1;
    if (first > last || !readable_code(w->code, first, last + 1)) return false;
    if (w->at) {
        if (w->at < first || w->at > last || !is_ret(w->at)) return false;
        w->found = w->at;
        return true;
    }
    uintptr_t g = find_ret(first, last + 1);
    if (!g) return false;
    w->found = g;
    return true;
}

/* DWARF call frame instructions (DWARF 5, 6.4.2; GNU extensions). */
enum {
    CFA_advance_loc = 0x40, /* high two bits; the low six are the operand */
    CFA_offset = 0x80,
    CFA_restore = 0xc0,
    CFA_nop = 0x00,
    CFA_advance_loc1 = 0x02,
    CFA_advance_loc2 = 0x03,
    CFA_advance_loc4 = 0x04,
    CFA_offset_extended = 0x05,
    CFA_restore_extended = 0x06,
    CFA_undefined = 0x07,
    CFA_same_value = 0x08,
    CFA_register = 0x09,
    CFA_remember_state = 0x0a,
    CFA_restore_state = 0x0b,
    CFA_def_cfa = 0x0c,
    CFA_def_cfa_register = 0x0d,
    CFA_def_cfa_offset = 0x0e,
    CFA_def_cfa_expression = 0x0f,
    CFA_expression = 0x10,
    CFA_offset_extended_sf = 0x11,
    CFA_def_cfa_sf = 0x12,
    CFA_def_cfa_offset_sf = 0x13,
    CFA_val_offset = 0x14,
    CFA_val_offset_sf = 0x15,
    CFA_val_expression = 0x16,
    CFA_GNU_args_size = 0x2e,
    CFA_GNU_negative_offset_extended = 0x2f,
};

enum { STACK = 8 };

struct machine {
    const struct cie *cie;
    struct row init, row, stack[STACK];
    int depth;
};

static void set_rule(struct row *r, uint64_t reg, enum rule rule, int64_t off)
{
    if (reg >= NREGS) return;
    r->rule[reg] = (unsigned char)rule;
    r->off[reg] = off;
}

/* Executes one instruction on *row. Returns the location advance (in code
 * units), 0 for none, -1 for an instruction we do not follow. */
static int64_t step(struct machine *m, struct row *row, struct cursor *c)
{
    unsigned op = (unsigned)u8_at(c), low = op & 0x3f;
    int64_t align = m->cie->data_align;
    uint64_t reg;
    switch (op & 0xc0) {
    case CFA_advance_loc:
        return low;
    case CFA_offset:
        set_rule(row, low, R_OFFSET, (int64_t)uleb(c) * align);
        return 0;
    case CFA_restore:
        if (low < NREGS) set_rule(row, low, m->init.rule[low], m->init.off[low]);
        return 0;
    }
    switch (op) {
    case CFA_nop:
        return 0;
    case CFA_advance_loc1:
        return (int64_t)u8_at(c);
    case CFA_advance_loc2:
        return (int64_t)fixed(c, 2);
    case CFA_advance_loc4:
        return (int64_t)fixed(c, 4);
    case CFA_offset_extended:
        reg = uleb(c);
        set_rule(row, reg, R_OFFSET, (int64_t)uleb(c) * align);
        return 0;
    case CFA_offset_extended_sf:
        reg = uleb(c);
        set_rule(row, reg, R_OFFSET, sleb(c) * align);
        return 0;
    case CFA_GNU_negative_offset_extended:
        reg = uleb(c);
        set_rule(row, reg, R_OFFSET, -(int64_t)uleb(c) * align);
        return 0;
    case CFA_restore_extended:
        reg = uleb(c);
        if (reg < NREGS) set_rule(row, reg, m->init.rule[reg], m->init.off[reg]);
        return 0;
    case CFA_same_value:
        set_rule(row, uleb(c), R_SAME, 0);
        return 0;
    case CFA_undefined:
        set_rule(row, uleb(c), R_OTHER, 0);
        return 0;
    case CFA_register:
        reg = uleb(c);
        uleb(c);
        set_rule(row, reg, R_OTHER, 0);
        return 0;
    case CFA_remember_state:
        if (m->depth == STACK) return -1;
        m->stack[m->depth++] = *row;
        return 0;
    case CFA_restore_state: /* the CFA too, as libgcc does */
        if (m->depth == 0) return -1;
        *row = m->stack[--m->depth];
        return 0;
    case CFA_def_cfa:
        row->cfa_reg = (int)uleb(c);
        row->cfa_off = (int64_t)uleb(c);
        return 0;
    case CFA_def_cfa_sf:
        row->cfa_reg = (int)uleb(c);
        row->cfa_off = sleb(c) * align;
        return 0;
    case CFA_def_cfa_register:
        row->cfa_reg = (int)uleb(c);
        return 0;
    case CFA_def_cfa_offset:
        row->cfa_off = (int64_t)uleb(c);
        return 0;
    case CFA_def_cfa_offset_sf:
        row->cfa_off = sleb(c) * align;
        return 0;
    case CFA_GNU_args_size:
        uleb(c);
        return 0;
    case CFA_def_cfa_expression:
        row->cfa_reg = -1;
        c->p += uleb(c);
        return 0;
    case CFA_expression:
    case CFA_val_expression:
        reg = uleb(c);
        c->p += uleb(c);
        set_rule(row, reg, R_OTHER, 0);
        return 0;
    case CFA_val_offset:
    case CFA_val_offset_sf:
        reg = uleb(c);
        (void)(op == CFA_val_offset ? (int64_t)uleb(c) : sleb(c));
        set_rule(row, reg, R_OTHER, 0);
        return 0;
    default:
        return -1; /* set_loc, vendor extensions */
    }
}

/* Runs the CIE's and the FDE's programs; true if w found a gadget in one of
 * the rows, each of which holds from its location to the next. */
static bool scan_fde(const struct cie *cie, const unsigned char *insns, const unsigned char *end,
                     uintptr_t pc, uintptr_t lo, uintptr_t hi, struct want *w)
{
    struct machine m = {.cie = cie, .init = {.cfa_reg = RSP, .cfa_off = 8}};
    struct cursor c = {cie->insns, cie->insns_end, false};
    while (c.p < c.end && !c.bad)
        if (step(&m, &m.init, &c) != 0) return false; /* a CIE does not advance */
    m.row = m.init;
    m.depth = 0;
    c = (struct cursor){insns, end, false};
    while (c.p < c.end && !c.bad) {
        int64_t adv = step(&m, &m.row, &c);
        if (adv < 0) return false;
        if (adv == 0 || c.bad) continue;
        uintptr_t next = pc + (uintptr_t)adv * cie->code_align;
        if (scan_span(&m.row, pc, next, lo, hi, w)) return true;
        pc = next;
    }
    return !c.bad && scan_span(&m.row, pc, hi, lo, hi, w);
}

/* ---- the search table ------------------------------------------------------- */

struct table {
    const unsigned char *hdr;
    const int32_t *entries; /* pairs: initial location, FDE; relative to hdr */
    size_t count;
    struct segments code;
};

/* The executable, readable PT_LOAD segments of the object mapped at start
 * (its first segment maps the ELF header and the program headers, which
 * are copied first: read_code). False if they cannot be read. */
static bool code_segments(const struct link_map *map, const void *start, struct segments *out)
{
    ElfW(Ehdr) eh;
    ElfW(Phdr) ph[32];
    out->n = 0;
    out->file_end = 0;
    if (!read_code((uintptr_t)start, &eh, sizeof eh)) return false;
    if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_phentsize != sizeof *ph) return true;
    size_t nph = eh.e_phnum < 32 ? eh.e_phnum : 32;
    if (!read_code((uintptr_t)start + eh.e_phoff, ph, nph * sizeof *ph)) return false;
    for (size_t i = 0; i < nph; i++) {
        if (ph[i].p_type != PT_LOAD) continue;
        uintptr_t end = map->l_addr + ph[i].p_vaddr + ph[i].p_filesz;
        if (ph[i].p_filesz && end > out->file_end) out->file_end = end;
        if ((ph[i].p_flags & (PF_X | PF_R)) != (PF_X | PF_R) || out->n == MAX_SEGMENTS) continue;
        out->lo[out->n] = map->l_addr + ph[i].p_vaddr;
        out->hi[out->n++] = end;
    }
    return true;
}

/* Is every page of the object's file still there (not cut by a truncation
 * since it was mapped)? Its last file-backed byte says. */
static bool file_intact(const struct segments *code)
{
    unsigned char c;
    return !code->file_end || fdg_read_self((const void *)(code->file_end - 1), &c, 1) != 0;
}

static bool open_table(const void *eh_frame_hdr, struct table *t)
{
    const unsigned char *h = eh_frame_hdr;
    if (!h || h[0] != 1) return false;
    unsigned ptr_enc = h[1], count_enc = h[2], table_enc = h[3];
    /* The layout every linker writes: sorted table of datarel sdata4. */
    if (table_enc != (PE_DATAREL | PE_SDATA4) || ptr_enc == PE_OMIT || count_enc == PE_OMIT)
        return false;
    struct cursor c = {h + 4, h + 4 + 32, false};
    encoded(&c, ptr_enc, (uintptr_t)h);
    uint64_t count = encoded(&c, count_enc, (uintptr_t)h);
    if (c.bad || count == 0 || count > (UINT64_C(1) << 28)) return false;
    t->hdr = h;
    t->entries = (const int32_t *)c.p;
    t->count = (size_t)count;
    return true;
}

/* Scans entry i; hi_cap: where the next entry of the table begins. */
static bool scan_entry(const struct table *t, size_t i, struct want *w)
{
    const unsigned char *fde = t->hdr + t->entries[2 * i + 1];
    uint32_t len;
    memcpy(&len, fde, 4);
    if (len == 0 || len == 0xffffffffu) return false;
    int32_t cie_off;
    memcpy(&cie_off, fde + 4, 4);
    struct cie cie;
    if (cie_off == 0 || !parse_cie(fde + 4 - cie_off, &cie)) return false;
    struct cursor c = {fde + 8, fde + 4 + len, false};
    uintptr_t pc = (uintptr_t)encoded(&c, cie.fde_enc, (uintptr_t)t->hdr);
    uint64_t range = encoded(&c, cie.fde_enc & 0x0f, 0);
    if (cie.augmented) {
        uint64_t n = uleb(&c);
        if (c.bad || n > (uint64_t)(c.end - c.p)) return false;
        const unsigned char *after = c.p + n;
        if (cie.lsda_enc != PE_OMIT && encoded(&c, cie.lsda_enc & ~PE_INDIRECT, 0) != 0)
            return false; /* a language-specific data area: see above */
        c.p = after;
    }
    if (c.bad || range == 0) return false;
    uintptr_t hi = pc + range;
    if (i + 1 < t->count) {
        uintptr_t next = (uintptr_t)(t->hdr + t->entries[2 * i + 2]);
        if (next < hi) hi = next; /* the unwinder would pick the next FDE there */
    }
    return scan_fde(&cie, c.p, c.end, pc, pc, hi, w);
}

/* The entry whose initial location is the greatest <= addr. */
static bool entry_for(const struct table *t, uintptr_t addr, size_t *out)
{
    size_t lo = 0, hi = t->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)(t->hdr + t->entries[2 * mid]) <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0) return false;
    *out = lo - 1;
    return true;
}

/* Is g still a gadget of this kind in this table? */
static bool still_valid(const struct table *t, uintptr_t g, int kind)
{
    size_t i;
    struct want w = {.kind = kind, .at = g, .code = &t->code};
    return entry_for(t, g - 1, &i) && scan_entry(t, i, &w);
}

/* The first RBP gadget; failing that, the first RSP8, then RSP16 one. The
 * preferred kind is looked for in at most LOOK_ON more FDEs once a lesser
 * one is known: a whole table (100,000 FDEs in a large C++ library) costs
 * milliseconds. */
enum { LOOK_ON = 512 };

static void search(const struct table *t, struct fdg_gadget *out)
{
    out->kind = FDG_GADGET_NONE;
    size_t stop = t->count;
    for (size_t i = 0; i < stop; i++)
        for (int kind = FDG_GADGET_RBP; kind < (out->addr ? out->kind : FDG_GADGET_BARE); kind++) {
            struct want w = {.kind = kind, .code = &t->code};
            if (!scan_entry(t, i, &w)) continue;
            if (!out->addr && i + LOOK_ON < stop) stop = i + LOOK_ON;
            out->addr = w.found;
            out->kind = kind;
            if (kind == FDG_GADGET_RBP) return;
            break;
        }
}

/* The range [lo, hi) of FDE i. */
static bool fde_range(const struct table *t, size_t i, uintptr_t *lo, uintptr_t *hi)
{
    const unsigned char *fde = t->hdr + t->entries[2 * i + 1];
    int32_t cie_off;
    memcpy(&cie_off, fde + 4, 4);
    struct cie cie;
    if (cie_off == 0 || !parse_cie(fde + 4 - cie_off, &cie)) return false;
    uint32_t len;
    memcpy(&len, fde, 4);
    struct cursor c = {fde + 8, fde + 4 + len, false};
    *lo = (uintptr_t)encoded(&c, cie.fde_enc, (uintptr_t)t->hdr);
    *hi = *lo + encoded(&c, cie.fde_enc & 0x0f, 0);
    return !c.bad;
}

/* A 0xc3 byte whose address-1 no FDE covers (the unwinder stops there, as it
 * stops at any code without CFI), in an executable segment. */
static uintptr_t bare_ret(const struct table *t, const struct segments *code)
{
    for (unsigned i = 0; i < code->n; i++) {
        for (uintptr_t g = code->lo[i] + 1; g < code->hi[i] && (g = find_ret(g, code->hi[i]));
             g++) {
            size_t e;
            uintptr_t lo, hi;
            if (!t || !entry_for(t, g - 1, &e) || !fde_range(t, e, &lo, &hi) || g - 1 >= hi)
                return g;
        }
    }
    return 0;
}

/* ---- per-object cache ------------------------------------------------------- */

enum { SLOTS = 32 };

/* A slot keeps the segments the object's program headers gave when it was
 * first searched: the mapping was laid out from them, and a file written
 * over in place since then changes the headers we would read, not the
 * mapping's extent. Its key is the object's whole layout as the loader
 * placed it (link map, extent, unwind table, dynamic section): another
 * object loaded where an unloaded one was matches only if laid out the
 * same, and its gadget is still checked in its own bytes. */
struct object_key {
    struct fdg_caller object;
    const void *dynamic;
};

static struct slot {
    struct object_key key;
    uintptr_t addr;
    int kind;
    struct segments code;
} slots[SLOTS];
static unsigned next_slot;
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;

/* Taken around fork with dlopen.c's locks: a child must not inherit it
 * taken by another thread. */
void fdg_gadget_atfork(bool prepare)
{
    if (prepare)
        pthread_mutex_lock(&slots_lock);
    else
        pthread_mutex_unlock(&slots_lock);
}

static struct object_key key_of(const struct fdg_caller *o)
{
    return (struct object_key){*o, o->map->l_ld};
}

static bool same_key(const struct object_key *a, const struct object_key *b)
{
    return fdg_same_caller(&a->object, &b->object) && a->dynamic == b->dynamic;
}

static bool cached(const struct fdg_caller *o, struct fdg_gadget *out, struct segments *code)
{
    bool hit = false;
    struct object_key k = key_of(o);
    pthread_mutex_lock(&slots_lock);
    for (unsigned i = 0; i < SLOTS; i++)
        if (slots[i].addr && same_key(&slots[i].key, &k)) {
            out->addr = slots[i].addr;
            out->kind = slots[i].kind;
            *code = slots[i].code;
            hit = true;
            break;
        }
    pthread_mutex_unlock(&slots_lock);
    return hit;
}

static void store(const struct fdg_caller *o, const struct fdg_gadget *g,
                  const struct segments *code)
{
    struct object_key k = key_of(o);
    pthread_mutex_lock(&slots_lock);
    unsigned i = 0;
    while (i < SLOTS && !(slots[i].key.object.map == k.object.map &&
                          slots[i].key.object.start == k.object.start))
        i++;
    if (i == SLOTS) i = next_slot++ % SLOTS;
    slots[i] = (struct slot){k, g->addr, g->kind, *code};
    pthread_mutex_unlock(&slots_lock);
}

/* A known gadget costs two reads through the kernel (the file's last byte,
 * the gadget's code), a search four and more. */
bool fdg_gadget_find(const struct fdg_caller *o, struct fdg_gadget *out)
{
    struct table t;
    bool hit = cached(o, out, &t.code);
    if (!hit && !code_segments(o->map, o->start, &t.code)) return false;
    if (!file_intact(&t.code)) return false;
    bool cfi = open_table(o->eh_frame, &t);
    if (hit && (out->kind == FDG_GADGET_BARE
                    ? readable_code(&t.code, out->addr, out->addr + 1) && is_ret(out->addr)
                    : cfi && still_valid(&t, out->addr, out->kind)))
        return true;
    /* Not the object the slot was made for after all: its own headers. */
    if (hit && (!code_segments(o->map, o->start, &t.code) || !file_intact(&t.code))) return false;
    out->addr = 0;
    out->kind = FDG_GADGET_NONE;
    if (cfi) search(&t, out);
    if (out->kind == FDG_GADGET_NONE && (out->addr = bare_ret(cfi ? &t : NULL, &t.code)))
        out->kind = FDG_GADGET_BARE;
    if (out->kind == FDG_GADGET_NONE) return false;
    store(o, out, &t.code);
    return true;
}
