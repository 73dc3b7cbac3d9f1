#ifndef PGQUORUM_CSPAWN_H
#define PGQUORUM_CSPAWN_H

#include <spawn.h>

/// Adds to `actions` the closing of every descriptor from `from` on, in the child
/// (glibc's posix_spawn_file_actions_addclosefrom_np, which Swift's Glibc module does not
/// declare: it is a GNU extension). Returns 0, or an error number.
int pgquorum_spawn_add_close_from(posix_spawn_file_actions_t *actions, int from);

#endif
