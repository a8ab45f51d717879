#include <stdio.h>
int main(void) { puts("camelid"); return 0; }
