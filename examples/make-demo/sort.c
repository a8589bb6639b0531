#include <stdlib.h>
#include <string.h>
#include "demo.h"

static int by_text(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void sort_words(char **words, size_t n) { qsort(words, n, sizeof *words, by_text); }
