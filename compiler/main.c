/* ntc: the command-line driver.  A thin layer over libntc: it parses the
 * command name and hands the rest to the command's function. */
#include "driver.h"
#include "ntc/nettailor.h"
#include "ntc/pass.h"

#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int drv_fail(const ntc_err *err)
{
    fprintf(stderr, "ntc: error: %s\n", ntc_err_str(err));
    return 1;
}

int drv_failf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ntc: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int drv_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ntc: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nsee 'ntc %s --help'\n", cmd);
    va_end(ap);
    return 2;
}

ntc_graph *drv_read_graph(const char *path)
{
    ntc_err err = {0};
    ntc_graph *g = ntc_graph_read_xml(path, &err);
    if (!g)
        drv_fail(&err);
    return g;
}

char *drv_weights_name(const char *xml_path)
{
    size_t n = strlen(xml_path);
    const char *dot = strrchr(xml_path, '.');
    const char *slash = strrchr(xml_path, '/');
    if (dot && (!slash || dot > slash))
        n = (size_t)(dot - xml_path);
    char *r = malloc(n + sizeof ".safetensors");
    if (!r)
        return NULL;
    memcpy(r, xml_path, n);
    strcpy(r + n, ".safetensors");
    return r;
}

int drv_transform(const char *in, const char *pipeline, unsigned mode, const char *out, const char *what)
{
    ntc_graph *g = drv_read_graph(in);
    if (!g)
        return 1;
    ntc_err err = {0};
    int64_t before = ntc_graph_macs(g);
    char *weights = drv_weights_name(out);
    int rc = 1;
    if (!weights)
        drv_failf("out of memory");
    else if (ntc_run_passes(g, pipeline, mode, &err) || ntc_graph_write_xml(g, out, weights, &err))
        drv_fail(&err);
    else {
        int64_t after = ntc_graph_macs(g), params = 0;
        for (int i = 0; i < g->n_nodes; i++)
            params += ntc_node_params(g, i);
        printf("wrote %s and %s: %s graph, %d nodes, %d blocks, %lld parameters, "
               "%.2f M MACs per image (was %.2f M)\n", out, weights, what, g->n_nodes, g->n_blocks,
               (long long)params, (double)after / 1e6, (double)before / 1e6);
        rc = 0;
    }
    free(weights);
    ntc_graph_free(g);
    return rc;
}

const char *drv_grouped(int64_t v, char buf[32])
{
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%lld", (long long)(v < 0 ? -v : v));
    int at = 0;
    if (v < 0)
        buf[at++] = '-';
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0)
            buf[at++] = ',';
        buf[at++] = digits[i];
    }
    buf[at] = 0;
    return buf;
}

const char *drv_human(int64_t v, char buf[32])
{
    static const char units[] = " KMGT";
    double x = (double)v;
    int u = 0;
    while (x >= 1000 && u < 4)
        x /= 1000, u++;
    if (u == 0)
        snprintf(buf, 32, "%lld", (long long)v);
    else
        snprintf(buf, 32, "%.*f %c", x < 10 ? 2 : 1, x, units[u]);
    return buf;
}

void drv_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

int drv_parse_int(const char *cmd, const char *opt, const char *s, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end)
        return drv_usage(cmd, "%s expects an integer, got '%s'", opt, s);
    *out = v;
    return 0;
}

int drv_parse_float(const char *cmd, const char *opt, const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end)
        return drv_usage(cmd, "%s expects a number, got '%s'", opt, s);
    *out = v;
    return 0;
}

int cmd_version(int argc, char **argv)
{
    (void)argc, (void)argv;
    printf("ntc 0.1.0 (IR version %d)\n", NTC_IR_VERSION);
    return 0;
}

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *doc;
} commands[] = {
#define X(name, doc) {#name, cmd_##name, doc},
    NTC_COMMANDS(X)
#undef X
};

static void usage(FILE *f)
{
    fprintf(f, "usage: ntc COMMAND [ARGS]   (ntc COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].doc);
}

int main(int argc, char **argv)
{
    /* A write past the file size limit (ulimit -f) then fails with EFBIG
     * and is reported like a full disk (the atomic writers remove their
     * temp file), instead of the kernel killing the process with SIGXFSZ
     * halfway through a write and leaving PATH.tmp.PID behind. */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version"))
        return cmd_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "ntc: error: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
