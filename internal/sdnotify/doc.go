// Package sdnotify tells the service manager that started Conveyor how it is
// doing: the sd_notify protocol of systemd, written here in a few lines
// instead of linking libsystemd or a wrapper module.
//
// A service started with Type=notify finds in $NOTIFY_SOCKET the path of a
// unix datagram socket (a leading '@' names the abstract namespace) and
// sends it newline-separated assignments: READY=1 once it serves, STATUS=
// for `systemctl status`, STOPPING=1 when it begins to shut down. Without
// $NOTIFY_SOCKET every call does nothing, so callers need no condition.
//
// It is not a watchdog, nor a way to pass file descriptors.
package sdnotify
