/* fields.h — reading protocol and train fields (see fields.c). */
#ifndef NETC_FIELDS_H
#define NETC_FIELDS_H

#include "sema_internal.h"

/* Report unknown (with a suggestion) and duplicate fields of `decl`. */
void fields_check_known(Sema *S, const Ast *decl, const char *const *known, const char *what);
/* The field `key` of decl, or the -D PREFIX.key override (which wins). */
const Ast *field_find(const Ast *decl, const char *key, const char *prefix, Override *ov, int nov);
/* Report -D PREFIX.key overrides that name no field. */
void fields_check_overrides(Sema *S, const char *prefix, const char *const *known, Override *ov, int nov);
bool field_one(Sema *S, const Ast *f, Value *out);
bool field_int(Sema *S, const Ast *f, int64_t lo, int64_t hi, int64_t *out);
bool field_number(Sema *S, const Ast *f, double lo, double hi, double *out);
/* A size (256 x 256): returns the number of axes, or -1 after an error. */
int field_sizes(Sema *S, const Ast *f, int64_t *out);

#endif
