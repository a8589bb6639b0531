#include <stdlib.h>
#include <string.h>
#include "demo.h"

/* How many distinct words there are, with an open-addressing table of hashes. */
size_t count_unique(char **words, size_t n) {
    size_t cap = 1;
    while (cap < 2 * n + 2) cap <<= 1;
    char **table = calloc(cap, sizeof *table);
    if (!table) return 0;
    size_t unique = 0;
    for (size_t i = 0; i < n; i++) {
        size_t slot = hash_word(words[i]) & (cap - 1);
        while (table[slot] && strcmp(table[slot], words[i]) != 0) slot = (slot + 1) & (cap - 1);
        if (!table[slot]) { table[slot] = words[i]; unique++; }
    }
    free(table);
    return unique;
}
