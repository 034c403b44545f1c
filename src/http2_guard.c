/*
 * The definition of h2o_hpack_parse_headers that libh2o's HTTP/2 code calls (see http2_guard.h).
 * Only the field count is decided here; decoding, and every error about what the fields say,
 * stay libh2o's.
 */
#define _GNU_SOURCE /* RTLD_NEXT, dl_iterate_phdr */
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include "ratelimitd/error.h"
#include "ratelimitd/hpack_count.h"
#include "ratelimitd/http2_guard.h"
#include "ratelimitd/server.h"

#if H2O_LIBRARY_VERSION_MAJOR != 0 || H2O_LIBRARY_VERSION_MINOR != 13
#error "h2o_hpack_parse_headers is interposed with h2o 2.2.x's signature: check it against this libh2o"
#endif

#define PARSER_SYMBOL "h2o_hpack_parse_headers"

/* The relocations through which a shared object calls or takes the address of a function (both
 * architectures are 64-bit, hence ELF64_R_TYPE and ELF64_R_SYM below). */
#if defined(__x86_64__)
#define RL_R_JUMP_SLOT R_X86_64_JUMP_SLOT
#define RL_R_GLOB_DAT R_X86_64_GLOB_DAT
#elif defined(__aarch64__)
#define RL_R_JUMP_SLOT R_AARCH64_JUMP_SLOT
#define RL_R_GLOB_DAT R_AARCH64_GLOB_DAT
#else
#error "the HTTP/2 guard's binding check knows x86-64 and AArch64 relocations only"
#endif

int h2o_hpack_parse_headers(h2o_req_t *req, struct st_h2o_hpack_header_table_t *header_table, const uint8_t *src,
                            size_t len, int *pseudo_header_exists_map, size_t *content_length,
                            h2o_cache_digests_t **digests, const char **err_desc);
/* the guard forwards through rl_hpack_parser_fn: the two must not drift apart */
_Static_assert(__builtin_types_compatible_p(__typeof__(&h2o_hpack_parse_headers), rl_hpack_parser_fn),
               "rl_hpack_parser_fn differs from h2o_hpack_parse_headers");

int h2o_hpack_parse_headers(h2o_req_t *req, struct st_h2o_hpack_header_table_t *header_table, const uint8_t *src,
                            size_t len, int *pseudo_header_exists_map, size_t *content_length,
                            h2o_cache_digests_t **digests, const char **err_desc)
{
    rl_worker_t *worker = rl_worker_of(req);
    size_t fields;
    /* A malformed block goes on to libh2o, whose decoder reports it as it always did. */
    if (rl_hpack_count_fields(src, len, RL_HTTP2_MAX_FIELDS, &fields) == RL_OK && fields > RL_HTTP2_MAX_FIELDS) {
        /* Undecoded, the block leaves the connection's HPACK table behind the client's, so the
         * connection cannot go on (RFC 9113 4.3): COMPRESSION_ERROR, and h2o closes it. */
        rl_metrics_count_header_block_refused(worker->metrics);
        *err_desc = "too many header fields";
        return H2O_HTTP2_ERROR_COMPRESSION;
    }
    return worker->hpack_parser(req, header_table, src, len, pseudo_header_exists_map, content_length, digests,
                                err_desc);
}

/* What the dynamic linker wrote into libh2o's slots for the parser. */
typedef struct st_binding_check_t {
    uintptr_t library_parser; /* libh2o's own definition: identifies the object to inspect */
    uintptr_t guard;
    size_t slots, to_guard, to_library; /* the rest are unresolved (lazy binding) */
    bool object_found, readable;        /* readable: it has the dynamic tables the check reads */
} binding_check_t;

static bool object_contains(const struct dl_phdr_info *info, uintptr_t addr)
{
    for (ElfW(Half) i = 0; i != info->dlpi_phnum; ++i) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && addr >= start && addr - start < ph->p_memsz)
            return true;
    }
    return false;
}

/* glibc rewrites the dynamic section's addresses to run-time ones when it loads an object (when
 * that section is writable); other loaders leave them relative to the object's base. Whichever
 * lands inside the object is the one; 0 for an absent entry or if neither does. */
static uintptr_t dyn_address(const struct dl_phdr_info *info, ElfW(Addr) ptr)
{
    if (ptr == 0 || object_contains(info, ptr))
        return ptr;
    return object_contains(info, info->dlpi_addr + ptr) ? info->dlpi_addr + ptr : 0;
}

static void check_relocations(const struct dl_phdr_info *info, const ElfW(Rela) * rel, size_t size,
                              const ElfW(Sym) * symtab, const char *strtab, binding_check_t *check)
{
    for (size_t i = 0; rel != NULL && i != size / sizeof(*rel); ++i) {
        unsigned long type = ELF64_R_TYPE(rel[i].r_info);
        if (type != RL_R_JUMP_SLOT && type != RL_R_GLOB_DAT)
            continue;
        if (strcmp(strtab + symtab[ELF64_R_SYM(rel[i].r_info)].st_name, PARSER_SYMBOL) != 0)
            continue;
        uintptr_t slot = *(const uintptr_t *)(info->dlpi_addr + rel[i].r_offset);
        ++check->slots;
        check->to_guard += slot == check->guard;
        check->to_library += slot == check->library_parser;
    }
}

static int inspect_object(struct dl_phdr_info *info, size_t size, void *data)
{
    binding_check_t *check = data;
    (void)size;
    if (!object_contains(info, check->library_parser))
        return 0;
    check->object_found = true;
    const ElfW(Dyn) *dyn = NULL;
    for (ElfW(Half) i = 0; i != info->dlpi_phnum; ++i) {
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    }
    /* the entries the check reads all have tags below DT_NUM: keep each one's value by tag */
    ElfW(Xword) value[DT_NUM] = {[DT_PLTREL] = DT_RELA};
    for (; dyn != NULL && dyn->d_tag != DT_NULL; ++dyn) {
        if (dyn->d_tag > 0 && dyn->d_tag < DT_NUM)
            value[dyn->d_tag] = dyn->d_un.d_val;
    }
    const ElfW(Sym) *symtab = (const ElfW(Sym) *)dyn_address(info, value[DT_SYMTAB]);
    const char *strtab = (const char *)dyn_address(info, value[DT_STRTAB]);
    /* both architectures use RELA entries; anything else is not an object this check understands */
    check->readable = symtab != NULL && strtab != NULL && value[DT_PLTREL] == DT_RELA;
    if (check->readable) {
        check_relocations(info, (const ElfW(Rela) *)dyn_address(info, value[DT_JMPREL]), value[DT_PLTRELSZ], symtab,
                          strtab, check);
        check_relocations(info, (const ElfW(Rela) *)dyn_address(info, value[DT_RELA]), value[DT_RELASZ], symtab, strtab,
                          check);
    }
    return 1;
}

/* Why libh2o's calls would miss the guard, or NULL when every slot holds it. */
static const char *binding_problem(const binding_check_t *check)
{
    if (check->library_parser == 0 || !check->object_found)
        return "no shared library defines it";
    if (!check->readable)
        return "the library's dynamic section could not be read";
    if (check->slots == 0)
        return "the library calls it without a relocation";
    if (check->to_library != 0)
        return "the library binds it to its own definition, as -Bsymbolic does";
    if (check->to_guard != check->slots)
        return "the library is bound lazily, so the binding cannot be checked before the first request: "
               "start ratelimitd with LD_BIND_NOW=1";
    return NULL;
}

int rl_http2_guard_resolve(rl_hpack_parser_fn *parser, char *err, size_t errlen)
{
    void *library_parser = dlsym(RTLD_NEXT, PARSER_SYMBOL);
    binding_check_t check = {.library_parser = (uintptr_t)library_parser, .guard = (uintptr_t)h2o_hpack_parse_headers};
    if (library_parser != NULL)
        dl_iterate_phdr(inspect_object, &check);
    const char *problem = binding_problem(&check);
    if (problem != NULL) {
        snprintf(err, errlen,
                 "libh2o-evloop's calls to " PARSER_SYMBOL " would not reach ratelimitd's (%s), so HTTP/2 header "
                 "blocks would have no field limit; ratelimitd needs a shared libh2o-evloop 2.2.x that calls it "
                 "through its PLT, as Debian's does",
                 problem);
        return RL_ERR_INVALID;
    }
    *parser = (rl_hpack_parser_fn)library_parser;
    return RL_OK;
}
