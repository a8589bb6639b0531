#include <stdio.h>
#include <stdlib.h>
#include "demo.h"

int main(int argc, char **argv) {
    FILE *f = fopen(argc > 1 ? argv[1] : "words.txt", "r");
    if (!f) { perror("open"); return 1; }
    static char text[1 << 16];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = '\0';
    static char *words[1 << 14];
    size_t n = parse_words(text, words, sizeof words / sizeof *words);
    size_t unique = count_unique(words, n);
    sort_words(words, n);
    format_report(words, n, unique);
    return 0;
}
