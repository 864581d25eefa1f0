/* Ahead-of-time compilation of a task: object file from ntc_codegen, the
 * task's C side (task_stub.c plus its tables), `cc -shared`, a header, the
 * task's weights file and its share of the universal weights file.
 *
 * Which parameters are universal: those read by nodes of blocks with role
 * universal.  Everything else (task blocks, the head, alphas, nodes
 * outside blocks) is the task's own. */
#include "ntc/jit.h"

#include "compiler/aot_weights.h"
#include "compiler/codegen.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char task_stub[] =
#include "compiler/task_stub.inc"
    ;

/* A growing text buffer; out-of-memory sticks and is reported once. */
typedef struct {
    char *s;
    size_t len, cap;
    bool oom;
} text;

static void add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add(text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = t->cap - t->len;
        int n = t->oom ? 0 : vsnprintf(t->s ? t->s + t->len : NULL, room, fmt, ap);
        va_end(ap);
        if (t->oom || n < 0)
            return;
        if ((size_t)n < room) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->cap ? t->cap * 2 : 4096) + (size_t)n;
        char *s = ntc_realloc(t->s, cap);
        if (!s) {
            t->oom = true;
            return;
        }
        t->s = s, t->cap = cap;
    }
}

/* C identifier from the file name: "out/digits-v2.so" -> "digits_v2". */
static char *task_prefix(const char *so_path)
{
    const char *base = strrchr(so_path, '/');
    base = base ? base + 1 : so_path;
    size_t n = strlen(base);
    if (n > 3 && !strcmp(base + n - 3, ".so"))
        n -= 3;
    char *p = ntc_malloc(n + 2);
    if (!p)
        return NULL;
    size_t k = 0;
    if (!n || isdigit((unsigned char)base[0]))
        p[k++] = '_';
    for (size_t i = 0; i < n; i++)
        p[k++] = isalnum((unsigned char)base[i]) ? base[i] : '_';
    p[k] = 0;
    return p;
}

/* so_path with its ".so" replaced by ext (or ext appended). */
static char *with_ext(const char *so_path, const char *ext)
{
    size_t n = strlen(so_path);
    if (n > 3 && !strcmp(so_path + n - 3, ".so"))
        n -= 3;
    char *p = ntc_malloc(n + strlen(ext) + 1);
    if (p) {
        memcpy(p, so_path, n);
        strcpy(p + n, ext);
    }
    return p;
}

static const char *basename_of(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static bool same_dir(const char *a, const char *b)
{
    size_t da = (size_t)(basename_of(a) - a), db = (size_t)(basename_of(b) - b);
    return da == db && !strncmp(a, b, da);
}

/* Role of each parameter: universal if a node of a universal block reads it. */
static bool is_universal(const ntc_graph *g, int v)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead || n->block < 0 || g->blocks[n->block].role != NTC_ROLE_UNIVERSAL)
            continue;
        for (int k = 0; k < NTC_MAX_PARAMS; k++)
            if (n->par[k] == v)
                return true;
    }
    return false;
}

typedef struct {
    int file;
    uint64_t offset, count;
} param_ref;

/* Places every parameter of the table: task ones into `task` (new),
 * universal ones into `uni` (existing bytes reused when identical,
 * appended when missing, an error when different).  *grew tells whether
 * uni changed. */
static int place_params(const ntc_graph *g, const ntc_cg_result *r, ntcw_file *task, ntcw_file *uni,
                        const char *uni_path, param_ref *refs, bool *grew, ntc_err *err)
{
    *grew = false;
    for (int i = 0; i < r->n_params; i++) {
        const ntc_value *v = &g->values[r->params[i]];
        int64_t dims[8];
        int rank;
        float *packed;
        const float *data = ntc_cg_param_data(g, r, i, &packed, dims, &rank);
        if (!data)
            return ntc_error(err, NULL, 0, "out of memory");
        /* a packed copy is its own tensor: NAME@o16 holds the weight in
         * blocks of 16 filters (ntc_cg_param_data) */
        char name[4096];
        if (r->layout[i])
            snprintf(name, sizeof name, "%s@o%d", v->name, r->layout[i]);
        else
            snprintf(name, sizeof name, "%s", v->name);
        uint64_t count = (uint64_t)ntc_shape_numel(&v->shape);
        bool u = is_universal(g, r->params[i]);
        ntcw_file *f = u ? uni : task;
        int k = u ? ntcw_find(uni, name) : -1;
        int rc = 0;
        if (k >= 0) {
            const ntcw_tensor *t = &uni->t[k];
            if (t->count != count || memcmp(uni->bytes + t->offset, data, count * sizeof(float)))
                rc = ntc_error(err, uni_path, 0,
                               "universal tensor '%s' differs from the graph's: this universal weights "
                               "file belongs to another backbone (use another --universal-weights file)",
                               name);
        } else if ((k = ntcw_append(f, name, rank, dims, data, err)) < 0) {
            rc = -1;
        } else {
            *grew |= u;
        }
        ntc_free(packed);
        if (rc)
            return -1;
        refs[i] = (param_ref){u, f->t[k].offset, count};
    }
    return 0;
}

static uint64_t checksum(const ntcw_file *f, const param_ref *refs, int n, int file)
{
    uint64_t h = NTCW_FNV_INIT;
    for (int i = 0; i < n; i++)
        if (refs[i].file == file)
            h = ntcw_fnv(h, f->bytes + refs[i].offset, refs[i].count * sizeof(float));
    return h;
}

static void c_string(text *t, const char *s)
{
    add(t, "\"");
    for (; *s; s++)
        add(t, *s == '"' || *s == '\\' ? "\\%c" : "%c", *s);
    add(t, "\"");
}

/* The task's C source: the stub with its tables at the @META@ line. */
static char *task_source(const char *prefix, const ntc_cg_result *r, const param_ref *refs,
                         const char *files[2], const uint64_t sums[2], size_t *len)
{
    const char *mark = strstr(task_stub, "/* @META@ */");
    text t = {0};
    add(&t, "/* generated by ntc compile */\n%.*s", (int)(mark - task_stub), task_stub);
    add(&t, "#define NTC_TASK(x) %s_##x\n#define TASK_NAME \"%s\"\n", prefix, prefix);
    add(&t, "#define TASK_IN_NUMEL %lldLL\n#define TASK_OUT_NUMEL %lldLL\n#define TASK_WS_FLOATS %lldLL\n",
        (long long)r->in_numel, (long long)r->out_numel, (long long)r->ws_floats);
    add(&t, "#define TASK_N_PARAMS %d\n", r->n_params);
    add(&t, "static const task_param task_params[TASK_N_PARAMS + 1] = {\n");
    for (int i = 0; i < r->n_params; i++)
        add(&t, "    {%d, %lluu, %lluu},\n", refs[i].file, (unsigned long long)refs[i].offset,
            (unsigned long long)refs[i].count);
    add(&t, "    {0, 0, 0}};\n");
    add(&t, "static const char *const task_files[2] = {");
    c_string(&t, files[0]);
    add(&t, ", ");
    c_string(&t, files[1]);
    add(&t, "};\nstatic const uint64_t task_sums[2] = {0x%016llxull, 0x%016llxull};\n",
        (unsigned long long)sums[0], (unsigned long long)sums[1]);
    add(&t, "%s", mark + strlen("/* @META@ */"));
    if (t.oom) {
        ntc_free(t.s);
        return NULL;
    }
    *len = t.len;
    return t.s;
}

static char *task_header(const char *prefix, const ntc_graph *g, const ntc_cg_result *r, size_t *len)
{
    char in[256], out[256], guard[256];
    ntc_shape_format(&g->values[r->input].shape, in, sizeof in);
    ntc_shape_format(&g->values[r->output].shape, out, sizeof out);
    size_t k = 0;
    for (const char *p = prefix; *p && k + 3 < sizeof guard; p++)
        guard[k++] = (char)toupper((unsigned char)*p);
    guard[k] = 0;
    text t = {0};
    add(&t, "/* %s.h - the task compiled by `ntc compile` from graph \"%s\".\n", prefix, g->name ? g->name : "");
    add(&t, " *\n *   char err[512];\n");
    add(&t, " *   %s_task *t = %s_create(NULL, NULL, err, sizeof err);  // files next to the .so\n", prefix, prefix);
    add(&t, " *   if (!t) { fprintf(stderr, \"%%s\\n\", err); ... }\n");
    add(&t, " *   %s_run(t, images, n, out);   // images: n x %s_INPUT_SIZE floats\n", prefix, guard);
    add(&t, " *   %s_destroy(t);\n *\n", prefix);
    add(&t, " * Input  %s (float32, NCHW, N = the batch)\n * Output %s\n */\n", in, out);
    add(&t, "#ifndef %s_H\n#define %s_H\n\n#include <stddef.h>\n#include <stdint.h>\n\n", guard, guard);
    add(&t, "#define %s_INPUT_SHAPE \"%s\"\n#define %s_INPUT_SIZE %lld   /* floats per item */\n", guard, in, guard,
        (long long)r->in_numel);
    add(&t, "#define %s_OUTPUT_SHAPE \"%s\"\n#define %s_OUTPUT_SIZE %lld  /* floats per item */\n\n", guard, out,
        guard, (long long)r->out_numel);
    add(&t, "typedef struct %s_task %s_task;\n\n", prefix, prefix);
    add(&t, "/* Maps the task's weights and the shared universal weights (NULL: the files\n"
            " * written by ntc compile, found next to the .so) and checks their checksums.\n"
            " * NULL on failure, with the reason in err. */\n");
    add(&t, "%s_task *%s_create(const char *task_weights, const char *universal_weights, char *err, size_t errlen);\n",
        prefix, prefix);
    add(&t, "/* Runs `batch` items on all CPUs: 0, or -1 for a bad argument.  One call at a\n"
            " * time per task object. */\n");
    add(&t, "int %s_run(%s_task *t, const float *input, int64_t batch, float *output);\n", prefix, prefix);
    add(&t, "void %s_destroy(%s_task *t);\n\n#endif\n", prefix, prefix);
    if (t.oom) {
        ntc_free(t.s);
        return NULL;
    }
    *len = t.len;
    return t.s;
}

/* Appends s to t in single quotes for /bin/sh. */
static void shell_quote(text *t, const char *s)
{
    add(t, "'");
    for (; *s; s++)
        add(t, *s == '\'' ? "'\\''" : "%c", *s);
    add(t, "'");
}

/* Runs the C compiler as the linker; on failure the error holds the
 * command and what it printed. */
static int link_shared(const char *cc, const char *obj, const char *src, const char *out, ntc_err *err)
{
    text cmd = {0};
    add(&cmd, "%s -shared -fPIC -O2 -D_GNU_SOURCE -o ", cc);
    shell_quote(&cmd, out);
    add(&cmd, " ");
    shell_quote(&cmd, obj);
    add(&cmd, " ");
    shell_quote(&cmd, src);
    add(&cmd, " -ldl -lpthread -lm 2>&1");
    if (cmd.oom) {
        ntc_free(cmd.s);
        return ntc_error(err, NULL, 0, "out of memory");
    }
    FILE *p = popen(cmd.s, "r");
    char said[600] = "";
    size_t n = 0;
    int status = -1;
    if (p) {
        char buf[256];
        size_t r;
        while ((r = fread(buf, 1, sizeof buf, p)) > 0)
            for (size_t i = 0; i < r && n + 1 < sizeof said; i++)
                said[n++] = buf[i];
        said[n] = 0;
        status = pclose(p);
    }
    int rc = 0;
    if (status != 0) {
        cmd.s[cmd.len - 5] = 0;  /* drop " 2>&1" */
        rc = ntc_error(err, NULL, 0, "linking the task failed (%s): %s\n  output: %s",
                       status < 0 ? strerror(errno) : "exit status", cmd.s, n ? said : "(none)");
    }
    ntc_free(cmd.s);
    return rc;
}

/* Writes the object and the C file to temporaries next to the output and
 * links them into so_path via a temporary + rename. */
static int build_so(const char *so_path, const char *cc, bool keep, const ntc_cg_result *r, const char *src,
                    size_t src_len, ntc_err *err)
{
    char *obj = with_ext(so_path, keep ? ".o" : ".tmp.o"), *c = with_ext(so_path, keep ? ".c" : ".tmp.c");
    char *tmp_so = with_ext(so_path, ".tmp.so");
    int rc = -1;
    if (!obj || !c || !tmp_so) {
        ntc_error(err, NULL, 0, "out of memory");
        goto out;
    }
    if (ntc_write_file_atomic(obj, r->obj, r->obj_len, err) || ntc_write_file_atomic(c, src, src_len, err) ||
        link_shared(cc, obj, c, tmp_so, err))
        goto out;
    if (rename(tmp_so, so_path)) {
        ntc_error(err, so_path, 0, "cannot write: %s", strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (!keep && obj)
        unlink(obj);
    if (!keep && c)
        unlink(c);
    if (rc && tmp_so)
        unlink(tmp_so);
    ntc_free(obj);
    ntc_free(c);
    ntc_free(tmp_so);
    return rc;
}

int ntc_aot_compile(ntc_graph *g, const char *so_path, const ntc_aot_opts *o, ntc_err *err)
{
    ntc_aot_opts none = {0};
    if (!o)
        o = &none;
    ntc_cg_opts co = {.hidden_entry = true};
    ntc_cg_result r;
    if (ntc_codegen(g, &co, &r, err))
        return -1;
    char *prefix = task_prefix(so_path), *header = with_ext(so_path, ".h");
    char *task_path = with_ext(so_path, ".weights");
    char *uni_path = o->universal_weights ? ntc_strdup(o->universal_weights)
                                          : ntc_path_sibling(so_path, "universal.weights");
    param_ref *refs = ntc_calloc((size_t)r.n_params + 1, sizeof *refs);
    ntcw_file task = {0}, uni = {0};
    char *src = NULL, *hdr = NULL;
    size_t src_len = 0, hdr_len = 0;
    int rc = -1;
    bool existed = false, grew = false;
    char task_tmp[4096], header_tmp[4096];
    if (!prefix || !header || !task_path || !uni_path || !refs) {
        ntc_error(err, NULL, 0, "out of memory");
        goto out;
    }
    if (ntcw_init(&task, err) || ntcw_read(&uni, uni_path, &existed, err) ||
        place_params(g, &r, &task, &uni, uni_path, refs, &grew, err))
        goto out;

    /* The universal file is append-only, so it can be written first; the
     * .so then finds it next to itself, or by absolute path when it lives
     * elsewhere. */
    if ((grew || !existed) && ntc_write_file_atomic(uni_path, uni.bytes, uni.len, err))
        goto out;
    char uni_abs[PATH_MAX];
    const char *files[2] = {basename_of(task_path), basename_of(uni_path)};
    if (!same_dir(uni_path, so_path)) {
        if (!realpath(uni_path, uni_abs)) {
            ntc_error(err, uni_path, 0, "cannot resolve: %s", strerror(errno));
            goto out;
        }
        files[1] = uni_abs;
    }
    uint64_t sums[2] = {checksum(&task, refs, r.n_params, 0), checksum(&uni, refs, r.n_params, 1)};
    src = task_source(prefix, &r, refs, files, sums, &src_len);
    hdr = task_header(prefix, g, &r, &hdr_len);
    if (!src || !hdr) {
        ntc_error(err, NULL, 0, "out of memory");
        goto out;
    }
    const char *cc = o->cc ? o->cc : getenv("CC") ? getenv("CC") : "cc";
    /* The task's weights and header are staged, and renamed into place only
     * once the .so is linked: a link that fails (no room, no compiler)
     * leaves an earlier task's three files as they were, a matching set. */
    if (ntc_file_stage(task_path, task.bytes, task.len, task_tmp, err))
        goto out;
    if (ntc_file_stage(header, hdr, hdr_len, header_tmp, err)) {
        ntc_file_abandon(task_tmp);
        goto out;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (build_so(so_path, cc, o->keep_temps, &r, src, src_len, err) ||
        ntc_file_commit(task_tmp, task_path, err)) {
        ntc_file_abandon(task_tmp);
        ntc_file_abandon(header_tmp);
        goto out;
    }
    if (ntc_file_commit(header_tmp, header, err))
        goto out;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (o->times)
        *o->times = (ntc_aot_times){r.t_ir, r.t_opt, r.t_emit,
                                    (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec)};
    rc = 0;
out:
    ntcw_free(&task);
    ntcw_free(&uni);
    ntc_free(src);
    ntc_free(hdr);
    ntc_free(refs);
    ntc_free(prefix);
    ntc_free(header);
    ntc_free(task_path);
    ntc_free(uni_path);
    ntc_cg_result_free(&r);
    return rc;
}
