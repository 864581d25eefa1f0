/* ntc prune: NetTailor's pruning stage (the prune pass, then dce). */
#include "driver.h"
#include "ntc/nettailor.h"
#include "ntc/pass.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

static const char usage_text[] =
    "usage: ntc prune TUNED.xml [--universal N] [--universal-threshold T]\n"
    "                 [--proxy-threshold T] -o PRUNED.xml\n"
    "\n"
    "Removes the N universal blocks with the lowest alpha (and any with alpha <= the\n"
    "universal threshold) and every proxy with alpha <= the proxy threshold, then\n"
    "propagates: a layer left without branches is dead, so are the branches that\n"
    "read it and any layer nobody reads.  The alphas renormalise over the kept\n"
    "branches.  Removed branches are recorded in the graph for ntc stats / ntc dot.\n"
    "\n"
    "  --universal N             universal blocks to remove (default 0)\n"
    "  --universal-threshold T   also remove universal blocks with alpha <= T\n"
    "  --proxy-threshold T       remove proxies with alpha <= T (default 0.075)\n"
    "  -o FILE                   the pruned graph (+ .safetensors)\n";

int cmd_prune(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"universal", required_argument, 0, 'u'},
        {"universal-threshold", required_argument, 0, 'U'},
        {"proxy-threshold", required_argument, 0, 'p'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    long universal = 0;
    double u_thr = -1, p_thr = 0.075;
    const char *out = NULL;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'u': if (drv_parse_int("prune", "--universal", optarg, &universal)) return 2; break;
        case 'U': if (drv_parse_float("prune", "--universal-threshold", optarg, &u_thr)) return 2; break;
        case 'p': if (drv_parse_float("prune", "--proxy-threshold", optarg, &p_thr)) return 2; break;
        case 'o': out = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return drv_usage("prune", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return drv_usage("prune", "expected one input graph");
    if (!out)
        return drv_usage("prune", "missing -o PRUNED.xml");
    if (universal < 0)
        return drv_usage("prune", "--universal must not be negative");
    char pipeline[160];
    snprintf(pipeline, sizeof pipeline, "prune:universal=%ld:universal-threshold=%.9g:proxy-threshold=%.9g,dce",
             universal, u_thr, p_thr);
    return drv_transform(argv[optind], pipeline, NTC_PASS_TRAINING, out, "pruned");
}
