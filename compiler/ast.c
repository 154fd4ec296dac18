#include "compiler/ast.h"

int node_count(const Node *n) {
  int k = 0;
  for (; n; n = n->next) k++;
  return k;
}
int entry_count(const Entry *e) {
  int k = 0;
  for (; e; e = e->next) k++;
  return k;
}
int param_count(const Param *p) {
  int k = 0;
  for (; p; p = p->next) k++;
  return k;
}
