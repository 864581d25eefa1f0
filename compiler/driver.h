/* The ntc command-line driver: one file per command (cmd_*.c), each a
 * function `int cmd_NAME(int argc, char **argv)` returning the exit status.
 * Commands print errors as `ntc: error: FILE:LINE: what` and return 1. */
#ifndef NTC_DRIVER_H
#define NTC_DRIVER_H

#include "ntc/ir.h"

#include <stdint.h>
#include <stdio.h>

/* Prints "ntc: error: <err>" and returns 1. */
int drv_fail(const ntc_err *err);
/* Prints "ntc: error: <formatted>" and returns 1 (usage errors: 2 via drv_usage). */
int drv_failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "ntc: error: <formatted>\nsee 'ntc CMD --help'" and returns 2. */
int drv_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Reads a graph with its weights; prints the error and returns NULL. */
ntc_graph *drv_read_graph(const char *path);
/* "out.xml" -> "out.safetensors" (malloc'ed). */
char *drv_weights_name(const char *xml_path);
/* Reads `in`, runs the built-in `pipeline` in `mode`, writes `out` and
 * its weights (OUT.safetensors), then prints a one-line summary with
 * MACs before and after.  Returns the exit status. */
int drv_transform(const char *in, const char *pipeline, unsigned mode, const char *out, const char *what);
/* Parses a decimal integer / float option value or fails with a usage error. */
int drv_parse_int(const char *cmd, const char *opt, const char *s, long *out);
int drv_parse_float(const char *cmd, const char *opt, const char *s, double *out);

/* Number formatting for reports: "1234567" -> "1,234,567"; "1.81 G". */
const char *drv_grouped(int64_t v, char buf[32]);
const char *drv_human(int64_t v, char buf[32]);
/* Writes s as a JSON string literal. */
void drv_json_string(FILE *f, const char *s);

/* One row per command; add a row and a cmd_NAME.c file. */
#define NTC_COMMANDS(X) \
    X(version, "print the version of ntc and of its IR") \
    X(check, "read a graph and its weights and verify them") \
    X(new, "build a standard backbone (ResNet) with fresh weights") \
    X(import, "import an ONNX model with its weights (residual blocks become universal blocks)") \
    X(stats, "parameters and MACs per block, and totals") \
    X(dot, "draw the graph for Graphviz") \
    X(opt, "run a pipeline of optimisation passes (built in or from plugins)") \
    X(tailor, "NetTailor: make a backbone's student (proxies, alphas, new classifier)") \
    X(prune, "NetTailor: remove low-alpha blocks from a trained student") \
    X(run, "run a graph forward on .npy inputs and write its outputs") \
    X(eval, "accuracy, loss and throughput of a classifier on a dataset") \
    X(train, "train a graph with SGD: checkpoints, resume, NetTailor distillation") \
    X(compile, "compile a graph to a shared object + C header (LLVM, host CPU)")

#define X(name, doc) int cmd_##name(int argc, char **argv);
NTC_COMMANDS(X)
#undef X

#endif
