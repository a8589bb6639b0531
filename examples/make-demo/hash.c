#include "demo.h"

/* FNV-1a, 64 bits. */
unsigned long hash_word(const char *word) {
    unsigned long h = 1469598103934665603UL;
    for (; *word; word++) {
        h ^= (unsigned char)*word;
        h *= 1099511628211UL;
    }
    return h;
}
