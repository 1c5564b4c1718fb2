//go:build !linux

package volume

import "errors"

// procStat cannot tell without /proc: holders count as alive.
func procStat(int) (uint64, byte, error) { return 0, 0, errors.ErrUnsupported }

// groupHoldsFile cannot tell without /proc: nothing is killed.
func groupHoldsFile(int, string) bool { return false }
