package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// The dashboard's snapshot panel shows the repository `conveyor snapshot`
// writes to, with the schedule and retention in force.
func TestDashboardShowsSnapshots(t *testing.T) {
	t.Parallel()
	up := startUp(t, upOptions{Env: []string{"CONVEYOR_SNAPSHOT_EVERY=24h", "CONVEYOR_SNAPSHOT_KEEP_LAST=3"}})
	snapCLI(t, up.DataDir, "create")
	var listed []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(snapCLI(t, up.DataDir, "list", "-o", "json")), &listed); err != nil || len(listed) != 1 {
		t.Fatalf("snapshot list -o json: %v %+v", err, listed)
	}

	resp, err := http.Get(dashboardURL(t, up) + "/api/snapshots")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var view struct {
		Schedule, Retention string
		List                []struct{ ID string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/snapshots: %d %v", resp.StatusCode, err)
	}
	if len(view.List) != 1 || view.List[0].ID != listed[0].ID {
		t.Errorf("panel lists %+v, the repository has %+v", view.List, listed)
	}
	if view.Schedule != "every 24h0m0s" || !strings.Contains(view.Retention, "last 3") {
		t.Errorf("panel schedule %q, retention %q", view.Schedule, view.Retention)
	}
}
