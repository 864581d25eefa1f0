/* ntc tailor: a backbone -> NetTailor's student supernetwork (the tailor pass). */
#include "driver.h"
#include "ntc/nettailor.h"
#include "ntc/pass.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

static const char usage_text[] =
    "usage: ntc tailor BACKBONE.xml [--max-skip K] [--classes N] [--seed S] -o STUDENT.xml\n"
    "\n"
    "Freezes the backbone's universal blocks and adds, for every layer, proxies\n"
    "reading the K previous layers (maxpool when the resolution drops, 1x1 conv,\n"
    "batchnorm), a mix node with its alpha logits (+2 universal, -2 proxies) and a\n"
    "new classifier with N outputs.  Writes STUDENT.xml and STUDENT.safetensors.\n"
    "\n"
    "  --max-skip K   proxies read up to K layers back (default 3)\n"
    "  --classes N    outputs of the new classifier (default: as the backbone's)\n"
    "  --seed S       seed of the new weights (default 1)\n"
    "  -o FILE        the student graph\n";

int cmd_tailor(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"max-skip", required_argument, 0, 'k'}, {"classes", required_argument, 0, 'c'},
        {"seed", required_argument, 0, 's'},     {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    long max_skip = 3, classes = 0, seed = 1;
    const char *out = NULL;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'k': if (drv_parse_int("tailor", "--max-skip", optarg, &max_skip)) return 2; break;
        case 'c': if (drv_parse_int("tailor", "--classes", optarg, &classes)) return 2; break;
        case 's': if (drv_parse_int("tailor", "--seed", optarg, &seed)) return 2; break;
        case 'o': out = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return drv_usage("tailor", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return drv_usage("tailor", "expected one input graph");
    if (!out)
        return drv_usage("tailor", "missing -o STUDENT.xml");
    if (max_skip < 0 || classes < 0)
        return drv_usage("tailor", "--max-skip and --classes must not be negative");
    char pipeline[128];
    snprintf(pipeline, sizeof pipeline, "tailor:max-skip=%ld:classes=%ld:seed=%ld", max_skip, classes, seed);
    return drv_transform(argv[optind], pipeline, NTC_PASS_TRAINING, out, "student");
}
