package sdnotify

import (
	"fmt"
	"net"
	"strings"
)

// EnvSocket is the environment variable systemd sets for Type=notify units.
const EnvSocket = "NOTIFY_SOCKET"

// Notifier sends state lines to one notification socket. The zero value and
// a nil *Notifier send nothing.
type Notifier struct {
	addr string
}

// New returns the notifier named by $NOTIFY_SOCKET as getenv reads it, or a
// notifier that sends nothing when the variable is unset. It returns an
// error when the variable names a socket this package cannot reach (only
// unix sockets, by path or in the abstract namespace, are supported).
func New(getenv func(string) string) (*Notifier, error) {
	s := getenv(EnvSocket)
	switch {
	case s == "":
		return &Notifier{}, nil
	case strings.HasPrefix(s, "/"), strings.HasPrefix(s, "@"):
		return &Notifier{addr: s}, nil
	}
	return nil, fmt.Errorf("%s=%q is not a unix socket path or an @abstract name; unset it, or start conveyor from systemd with Type=notify", EnvSocket, s)
}

// Enabled reports whether notifications are sent anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != "" }

// Notify sends the assignments (such as "READY=1", "STATUS=serving") as one
// datagram. It returns nil at once when notifications are disabled, and an
// error when the socket cannot be reached or an assignment holds a newline.
func (n *Notifier) Notify(assignments ...string) error {
	if !n.Enabled() {
		return nil
	}
	for _, a := range assignments {
		if strings.ContainsRune(a, '\n') || !strings.Contains(a, "=") {
			return fmt.Errorf("sd_notify: %q is not one KEY=VALUE line", a)
		}
	}
	// On Linux, Go maps a name that starts with '@' to the abstract
	// namespace (a leading NUL byte), which is what systemd means by it.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: reach %s: %w", n.addr, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(assignments, "\n") + "\n")); err != nil {
		return fmt.Errorf("sd_notify: send to %s: %w", n.addr, err)
	}
	return nil
}

// Ready tells the manager the service is serving, with a status line.
func (n *Notifier) Ready(status string) error {
	return n.Notify("READY=1", "STATUS="+oneLine(status))
}

// Stopping tells the manager the service has begun to shut down.
func (n *Notifier) Stopping(status string) error {
	return n.Notify("STOPPING=1", "STATUS="+oneLine(status))
}

// Status updates the free-form status line `systemctl status` shows.
func (n *Notifier) Status(status string) error {
	return n.Notify("STATUS=" + oneLine(status))
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
