/* trivial.c - the baseline for `batchtok get` as a whole process: a C program
 * that prints one line and exits. */
#include <stdio.h>

int main(void)
{
	puts("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.baseline.signature");
	return 0;
}
