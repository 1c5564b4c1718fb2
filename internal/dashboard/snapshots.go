package dashboard

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Snapshots is what the dashboard shows of the volume's snapshots and how
// it takes one. The snapshot engine satisfies it; nil hides the panel.
type Snapshots interface {
	// List returns the snapshots, newest first.
	List(ctx context.Context) ([]SnapshotInfo, error)
	// Create takes a snapshot now and returns when it is stored, or the
	// reason it could not be taken.
	Create(ctx context.Context) error
	// Schedule describes when snapshots are taken, e.g. "every 6h".
	Schedule() string
	// Retention describes the retention policy in force, e.g. "keep 7 daily".
	Retention() string
}

// SnapshotInfo describes one snapshot.
type SnapshotInfo struct {
	ID        string
	CreatedAt time.Time
	Size      int64  // bytes of the volume it restores
	Added     int64  // bytes it stored that no earlier snapshot had
	Note      string // e.g. "scheduled", "manual", or why it is kept
}

// snapshotsView is the snapshots panel.
type snapshotsView struct {
	Schedule  string
	Retention string
	List      []SnapshotInfo
	Err       string
	Taken     bool
}

// maxListedSnapshots bounds the panel; older ones are summarised.
const maxListedSnapshots = 20

func (s *Server) snapshotsView(r *http.Request) *snapshotsView {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	v := &snapshotsView{Schedule: s.deps.Snapshots.Schedule(), Retention: s.deps.Snapshots.Retention(), Taken: r.URL.Query().Get("snapshot") == "taken"}
	list, err := s.deps.Snapshots.List(ctx)
	if err != nil {
		v.Err = err.Error()
	}
	if len(list) > maxListedSnapshots {
		list = list[:maxListedSnapshots]
	}
	v.List = list
	if e := r.URL.Query().Get("snapshot_error"); e != "" {
		v.Err = e
	}
	return v
}

func (s *Server) handleAPISnapshots(w http.ResponseWriter, r *http.Request) {
	if s.deps.Snapshots == nil {
		http.Error(w, "snapshots are not configured", http.StatusNotFound)
		return
	}
	writeJSON(w, s.snapshotsView(r))
}

// handleSnapshotNow takes a snapshot and returns to the page.
func (s *Server) handleSnapshotNow(w http.ResponseWriter, r *http.Request) {
	if s.deps.Snapshots == nil {
		http.Error(w, "snapshots are not configured", http.StatusNotFound)
		return
	}
	if err := s.deps.Snapshots.Create(r.Context()); err != nil {
		s.logf("dashboard: snapshot: %v", err)
		http.Redirect(w, r, "/?snapshot_error="+url.QueryEscape(err.Error())+"#snapshots", http.StatusSeeOther)
		return
	}
	s.logf("dashboard: snapshot taken from the dashboard")
	http.Redirect(w, r, "/?snapshot=taken#snapshots", http.StatusSeeOther)
}
