package bundle

import "syscall"

// syscallNoFollow keeps Unpack from writing through a symlink.
const syscallNoFollow = syscall.O_NOFOLLOW
