/* Shared by the XML reader and writer of the ir module. */
#ifndef NTC_IR_XML_INTERNAL_H
#define NTC_IR_XML_INTERNAL_H

#include <stdbool.h>

/* Names of values, nodes, blocks and outputs: non-empty valid UTF-8 with no
 * ',' (it separates `in` lists), whitespace or control characters. */
bool ntc_xml_name_ok(const char *name);

#endif
