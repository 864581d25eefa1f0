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

#endif
