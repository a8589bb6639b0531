#include <ctype.h>
#include "demo.h"

/* Splits `text` in place into words (runs of letters), lower-cased. */
size_t parse_words(char *text, char **words, size_t max) {
    size_t n = 0;
    char *p = text;
    while (*p && n < max) {
        while (*p && !isalpha((unsigned char)*p)) p++;
        if (!*p) break;
        words[n++] = p;
        while (isalpha((unsigned char)*p)) { *p = (char)tolower((unsigned char)*p); p++; }
        if (*p) *p++ = '\0';
    }
    return n;
}
