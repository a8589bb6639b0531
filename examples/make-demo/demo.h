/* The parts of the demo program, one per source file. */
#include <stddef.h>

size_t parse_words(char *text, char **words, size_t max);
size_t count_unique(char **words, size_t n);
unsigned long hash_word(const char *word);
void sort_words(char **words, size_t n);
void format_report(char **words, size_t n, size_t unique);
