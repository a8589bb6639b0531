#include <stdio.h>
#include "demo.h"

/* One line: how many words, how many distinct, the first and last in order. */
void format_report(char **words, size_t n, size_t unique) {
    if (n == 0) { printf("no words\n"); return; }
    printf("%zu words, %zu distinct, from \"%s\" to \"%s\"\n", n, unique, words[0], words[n - 1]);
}
