#include "testutil.h"
#include "ntc/frontends.h"

#include <math.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int tu_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

const char *tu_src(const char *rel)
{
    static char buf[4096];
    const char *root = getenv("NTC_TEST_SRCDIR");
    snprintf(buf, sizeof buf, "%s/%s", root ? root : ".", rel);
    return buf;
}

const char *tu_tmpdir(void)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "/tmp/ntc-test-XXXXXX");
    if (!mkdtemp(buf))
        abort();
    return buf;
}

int tu_ntc(char **out, const char *fmt, ...)
{
    char args[8192], cmd[9000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    const char *bin = getenv("NTC_BIN");
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", bin ? bin : "ntc", args);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (n + 1 >= cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

float tu_randf(unsigned *state)
{
    *state = *state * 1664525u + 1013904223u;
    return (float)((*state >> 8) & 0xffffff) / (float)0x1000000 * 2.0f - 1.0f;
}

double tu_rel_error(const float *got, const float *want, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        num = d > num || isnan(d) ? d : num;
        den = fmax(den, fabs((double)want[i]));
    }
    return den > 0 ? num / den : num;
}

ntc_graph *tu_resnet(int depth, unsigned seed)
{
    ntc_resnet_opts o;
    ntc_err err = {0};
    ntc_resnet_opts_default(&o);
    o.depth = depth;
    o.seed = seed;
    ck_assert_int_eq(ntc_resnet_set_input(&o, "1x28x28", &err), 0);
    ntc_graph *g = ntc_resnet_build(&o, &err);
    ck_assert_msg(g != NULL, "%s", ntc_err_str(&err));
    return g;
}
