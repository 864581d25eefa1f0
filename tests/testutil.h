/* Helpers shared by the Check suites. */
#ifndef NTC_TESTUTIL_H
#define NTC_TESTUTIL_H

#include <check.h>
#include "ntc/ir.h"

/* Runs one suite and returns the exit status for main(). */
int tu_run(Suite *s);
/* Path under the source tree (tests/fixtures/...): static buffer. */
const char *tu_src(const char *rel);
/* A fresh empty temporary directory for this test; static buffer. */
const char *tu_tmpdir(void);
/* Runs the ntc binary with the given arguments through /bin/sh; stdout and
 * stderr are captured into *out (malloc'ed, may be NULL). Returns the exit status. */
int tu_ntc(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A small uniform pseudo-random generator for test data (deterministic). */
float tu_randf(unsigned *state);
/* max |got - want| / max |want| over n floats (the absolute error when want
 * is all zeros); a NaN in got makes it NaN. */
double tu_rel_error(const float *got, const float *want, int64_t n);
/* `ntc new resnet --depth DEPTH --input 1x28x28` with weights from seed
 * (the builder's default is 0); fails the test if it cannot be built. */
ntc_graph *tu_resnet(int depth, unsigned seed);

#endif
