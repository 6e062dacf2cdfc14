/* The CMake target of libosft.so is linked from libosft.a (built by cargo) with
 * cmake/osft.map.in as its version script; a target needs a source, and this is it. */
typedef int osft_shared_link_unit;
