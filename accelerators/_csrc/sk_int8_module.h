/* INT8 entry points (filled in by the int8 work). */
#define SK_INT8_METHODS
