package sdnotify_test

import (
	"fmt"
	"os"

	"github.com/conveyorhq/conveyor/internal/sdnotify"
)

// A service tells systemd it is ready once it serves, and that it stops
// when it begins to shut down. Without NOTIFY_SOCKET (not started by
// systemd with Type=notify) nothing is sent.
func Example() {
	n, err := sdnotify.New(os.Getenv)
	if err != nil {
		fmt.Println(err)
		return
	}
	// ... start serving ...
	if err := n.Ready("serving on 127.0.0.1:9000"); err != nil {
		fmt.Println("warning:", err)
	}
	defer n.Stopping("stopping")
	fmt.Println("notifications sent:", n.Enabled())
}
