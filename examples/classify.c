/* classify: run tasks compiled by `ntc compile` on a batch of images and
 * print each image's top class for every task.
 *
 *   ntc compile a.xml -o a.so --universal-weights u.weights
 *   ntc compile b.xml -o b.so --universal-weights u.weights
 *   cc examples/classify.c -o classify -ldl
 *   ./classify a.so b.so images.npy
 *
 * This is the program a user writes: it needs libc and libdl only, not
 * libntc.  Each task is a shared object exporting NAME_create, NAME_run and
 * NAME_destroy (NAME: the file name without ".so", other characters than
 * letters and digits made '_'), declared in the header NAME.h that ntc
 * compile wrote next to it.  A program built for known tasks includes those
 * headers and links the .so files; this one takes any tasks on its command
 * line, so it finds the functions with dlsym and reads the input and output
 * sizes from the header's NAME_INPUT_SIZE / NAME_OUTPUT_SIZE lines.
 *
 * All tasks compiled against one universal weights file map it read-only
 * and shared: the backbone's weights are in memory once however many tasks
 * the process holds.
 *
 * Input: a float32 .npy array [N, ...] whose item size is every task's
 * input size (e.g. [N,1,28,28], already normalised as the tasks were
 * trained).  Output: a line "image<TAB>task...", then one line per image
 * with its index and, for each task, the class of the largest output.
 *
 * --memory (first argument) also prints on stderr the process's
 * proportional set size (PSS, /proc/self/smaps_rollup) before the tasks
 * are loaded (the images read) and after they have run: what holding the
 * tasks costs (bench/bench_compile.sh uses it). */
#define _POSIX_C_SOURCE 200809L   /* strdup, getline with -std=c11 */

#include <ctype.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TASKS 16

typedef void *(*create_fn)(const char *task_weights, const char *universal_weights, char *err, size_t errlen);
typedef int (*run_fn)(void *task, const float *input, int64_t batch, float *output);
typedef void (*destroy_fn)(void *task);

typedef struct {
    char name[256];            /* the symbol prefix */
    void *lib, *task;
    run_fn run;
    destroy_fn destroy;
    long long in_size, out_size;
} task;

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints "classify: MESSAGE" on stderr; returns -1. */
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "classify: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return -1;
}

/* ---- the .npy reader: float32, C order, format versions 1 to 3 ---------- */

typedef struct {
    float *data;
    long long dims[8];
    int rank;
} array;

/* The integer tuple after "'shape':" in the header dict. */
static int parse_shape(const char *h, array *a)
{
    const char *p = strstr(h, "'shape':");
    if (!p || !(p = strchr(p, '(')))
        return -1;
    for (p++;;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == ')')
            return 0;
        if (!isdigit((unsigned char)*p) || a->rank == 8)
            return -1;
        a->dims[a->rank++] = strtoll(p, (char **)&p, 10);
    }
}

static int read_npy(const char *path, array *a)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail("%s: cannot open", path);
    unsigned char pre[12];
    char *h = NULL;
    int rc = -1;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) || pre[6] < 1 || pre[6] > 3) {
        fail("%s: not a .npy file", path);
        goto done;
    }
    unsigned long hlen = pre[8] | (unsigned long)pre[9] << 8;   /* little-endian u16, v2+: u32 */
    if (pre[6] >= 2) {
        if (fread(pre + 10, 1, 2, f) != 2) {
            fail("%s: truncated header", path);
            goto done;
        }
        hlen |= (unsigned long)pre[10] << 16 | (unsigned long)pre[11] << 24;
    }
    if (hlen > (1ul << 20) || !(h = calloc(hlen + 1, 1)) || fread(h, 1, hlen, f) != hlen) {
        fail("%s: bad header", path);
        goto done;
    }
    if (!strstr(h, "'descr': '<f4'") || !strstr(h, "'fortran_order': False")) {
        fail("%s: must be a float32 array in C order (numpy: x.astype('float32'))", path);
        goto done;
    }
    if (parse_shape(h, a) || a->rank < 2) {
        fail("%s: needs a shape [N, ...] (an image batch)", path);
        goto done;
    }
    unsigned long long n = 1;
    for (int d = 0; d < a->rank; d++)
        n *= (unsigned long long)a->dims[d];
    if (!(a->data = malloc(sizeof(float) * (n ? n : 1))) || fread(a->data, sizeof(float), n, f) != n) {
        fail("%s: truncated data (or out of memory)", path);
        goto done;
    }
    rc = 0;
done:
    free(h);
    fclose(f);
    return rc;
}

/* ---- loading a task ------------------------------------------------------ */

/* NAME from "dir/NAME.so" as ntc compile makes it: non-alphanumerics become
 * '_', a leading digit gets a '_' in front. */
static void symbol_prefix(const char *so_path, char *out, size_t cap)
{
    const char *base = strrchr(so_path, '/');
    base = base ? base + 1 : so_path;
    size_t n = strlen(base), k = 0;
    if (n > 3 && !strcmp(base + n - 3, ".so"))
        n -= 3;
    if (!n || isdigit((unsigned char)base[0]))
        out[k++] = '_';
    for (size_t i = 0; i < n && k + 1 < cap; i++)
        out[k++] = isalnum((unsigned char)base[i]) ? base[i] : '_';
    out[k] = 0;
}

/* The header next to the .so: its "#define X_INPUT_SIZE n" and "#define
 * X_OUTPUT_SIZE n" lines. */
static int read_sizes(const char *so_path, task *t)
{
    char path[4096];
    size_t n = strlen(so_path);
    if (n > 3 && !strcmp(so_path + n - 3, ".so"))
        n -= 3;
    snprintf(path, sizeof path, "%.*s.h", (int)n, so_path);
    FILE *f = fopen(path, "r");
    if (!f)
        return fail("%s: cannot open the task's header (written by ntc compile next to %s)", path, so_path);
    char *line = NULL, name[256];
    size_t cap = 0;
    long long v;
    while (getline(&line, &cap, f) > 0) {
        if (sscanf(line, "#define %255s %lld", name, &v) != 2)
            continue;
        size_t len = strlen(name);
        if (len > 11 && !strcmp(name + len - 11, "_INPUT_SIZE"))
            t->in_size = v;
        else if (len > 12 && !strcmp(name + len - 12, "_OUTPUT_SIZE"))
            t->out_size = v;
    }
    free(line);
    fclose(f);
    if (t->in_size < 1 || t->out_size < 1)
        return fail("%s: no INPUT_SIZE/OUTPUT_SIZE lines; is this a header from ntc compile?", path);
    return 0;
}

static void *symbol(task *t, const char *what, const char *so_path)
{
    char sym[sizeof t->name + 16];
    snprintf(sym, sizeof sym, "%s_%s", t->name, what);
    void *f = dlsym(t->lib, sym);
    if (!f)
        fail("%s: no function %s (was it renamed after ntc compile?)", so_path, sym);
    return f;
}

static int load(const char *so_path, task *t)
{
    symbol_prefix(so_path, t->name, sizeof t->name);
    if (read_sizes(so_path, t))
        return -1;
    /* dlopen searches the library path for a name without '/': say "./". */
    char path[4096];
    snprintf(path, sizeof path, "%s%s", strchr(so_path, '/') ? "" : "./", so_path);
    if (!(t->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL)))
        return fail("%s", dlerror());
    create_fn create = (create_fn)symbol(t, "create", so_path);
    t->run = (run_fn)symbol(t, "run", so_path);
    t->destroy = (destroy_fn)symbol(t, "destroy", so_path);
    if (!create || !t->run || !t->destroy)
        return -1;
    char err[512];
    if (!(t->task = create(NULL, NULL, err, sizeof err)))   /* NULL: the weight files ntc compile wrote */
        return fail("%s", err);
    return 0;
}

static void unload(task *t)
{
    if (t->task)
        t->destroy(t->task);
    if (t->lib)
        dlclose(t->lib);
}

/* The process's proportional set size in kB (Linux), or -1. */
static long long pss_kb(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    long long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Pss: %lld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static long long argmax(const float *z, long long k)
{
    long long best = 0;
    for (long long j = 1; j < k; j++)
        best = z[j] > z[best] ? j : best;
    return best;
}

int main(int argc, char **argv)
{
    bool memory = argc > 1 && !strcmp(argv[1], "--memory");
    if (memory)
        argv++, argc--;
    if (argc < 3 || argc - 2 > MAX_TASKS) {
        fprintf(stderr, "usage: classify [--memory] TASK.so [TASK.so ...] IMAGES.npy   (at most %d tasks)\n",
                MAX_TASKS);
        return 2;
    }
    int n_tasks = argc - 2, rc = 1;
    static task tasks[MAX_TASKS];   /* zeroed: unload() is safe on every slot */
    float *out[MAX_TASKS] = {0};
    array images = {0};
    if (read_npy(argv[argc - 1], &images))
        goto done;
    long long pss_before = memory ? pss_kb() : 0;   /* the images are read: what follows is the tasks' */
    long long n = images.dims[0], item = 1;
    for (int d = 1; d < images.rank; d++)
        item *= images.dims[d];
    for (int i = 0; i < n_tasks; i++) {
        task *t = &tasks[i];
        if (load(argv[1 + i], t))
            goto done;
        if (t->in_size != item) {
            fail("%s wants %lld floats per image, %s has %lld", argv[1 + i], t->in_size, argv[argc - 1], item);
            goto done;
        }
        if (!(out[i] = malloc(sizeof(float) * (size_t)(t->out_size * (n ? n : 1))))) {
            fail("out of memory");
            goto done;
        }
        if (t->run(t->task, images.data, n, out[i])) {   /* the whole batch, on every CPU */
            fail("%s: run failed", argv[1 + i]);
            goto done;
        }
    }
    printf("image");
    for (int i = 0; i < n_tasks; i++)
        printf("\t%s", tasks[i].name);
    printf("\n");
    for (long long b = 0; b < n; b++) {
        printf("%lld", b);
        for (int i = 0; i < n_tasks; i++)
            printf("\t%lld", argmax(out[i] + b * tasks[i].out_size, tasks[i].out_size));
        printf("\n");
    }
    if (memory)
        fprintf(stderr, "classify: PSS %lld kB with %d tasks loaded and run, %lld kB before\n", pss_kb(), n_tasks,
                pss_before);
    rc = 0;
done:
    for (int i = 0; i < n_tasks; i++) {
        unload(&tasks[i]);
        free(out[i]);
    }
    free(images.data);
    return rc;
}
