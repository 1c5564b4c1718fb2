package bundle

import "time"

// OtherTime is a modification time other than Pack's.
func OtherTime() time.Time { return time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC) }
