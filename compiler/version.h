/* version.h — netc's version, printed by `netc --version` and recorded in
 * the standalone executables `netc build` writes. */
#ifndef NETC_VERSION_H
#define NETC_VERSION_H
#define NETC_VERSION "0.1.0"
#endif
