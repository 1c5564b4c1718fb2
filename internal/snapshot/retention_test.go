package snapshot

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestApply(t *testing.T) {
	t.Parallel()
	day := func(d, h int) Snapshot {
		tm := time.Date(2026, 11, d, h, 0, 0, 0, time.UTC)
		return Snapshot{ID: tm.Format("02T15"), Time: tm}
	}
	// Two a day from Nov 1 (a Sunday) to Nov 20, oldest first.
	var month []Snapshot
	for d := 1; d <= 20; d++ {
		month = append(month, day(d, 3), day(d, 15))
	}
	ids := func(s []Snapshot) []string {
		var out []string
		for _, x := range s {
			out = append(out, x.ID)
		}
		return out
	}
	tests := []struct {
		name    string
		in      []Snapshot
		policy  Policy
		keep    []string
		reasons map[string][]string // checked when set
	}{
		{name: "empty policy keeps all", in: month[:3], policy: Policy{}, keep: []string{"02T03", "01T15", "01T03"},
			reasons: map[string][]string{"02T03": {"no policy"}, "01T15": {"no policy"}, "01T03": {"no policy"}}},
		{name: "no snapshots", in: nil, policy: Policy{KeepLast: 3}, keep: nil},
		{name: "keep last 3", in: month, policy: Policy{KeepLast: 3}, keep: []string{"20T15", "20T03", "19T15"}},
		{name: "keep last more than there are", in: month[:2], policy: Policy{KeepLast: 10}, keep: []string{"01T15", "01T03"}},
		{name: "within 24h of the newest: exactly 24h is out", in: month, policy: Policy{KeepWithin: 24 * time.Hour}, keep: []string{"20T15", "20T03"}},
		{name: "within 25h of the newest", in: month, policy: Policy{KeepWithin: 25 * time.Hour}, keep: []string{"20T15", "20T03", "19T15"}},
		{name: "daily 3 keeps each day's newest", in: month, policy: Policy{KeepDaily: 3}, keep: []string{"20T15", "19T15", "18T15"},
			reasons: map[string][]string{"20T15": {"daily 2026-11-20"}, "19T15": {"daily 2026-11-19"}, "18T15": {"daily 2026-11-18"}}},
		{name: "weekly 2", in: month, policy: Policy{KeepWeekly: 2}, keep: []string{"20T15", "15T15"}},
		{name: "rules add up", in: month, policy: Policy{KeepLast: 1, KeepDaily: 2, KeepWeekly: 3}, keep: []string{"20T15", "19T15", "15T15", "08T15"},
			reasons: map[string][]string{"20T15": {"last", "daily 2026-11-20", "weekly 2026-W47"}, "19T15": {"daily 2026-11-19"}, "15T15": {"weekly 2026-W46"}, "08T15": {"weekly 2026-W45"}}},
		{name: "hourly 3", in: month, policy: Policy{KeepHourly: 3}, keep: []string{"20T15", "20T03", "19T15"},
			reasons: map[string][]string{"20T15": {"hourly 2026-11-20T15"}, "20T03": {"hourly 2026-11-20T03"}, "19T15": {"hourly 2026-11-19T15"}}},
		{name: "monthly and yearly", in: append([]Snapshot{{ID: "2025", Time: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)}, {ID: "oct", Time: time.Date(2026, 10, 9, 0, 0, 0, 0, time.UTC)}}, month...),
			policy: Policy{KeepMonthly: 2, KeepYearly: 2}, keep: []string{"20T15", "oct", "2025"},
			reasons: map[string][]string{"20T15": {"monthly 2026-11", "yearly 2026"}, "oct": {"monthly 2026-10"}, "2025": {"yearly 2025"}}},
		{name: "unsorted input", in: []Snapshot{day(3, 3), day(1, 3), day(2, 3)}, policy: Policy{KeepLast: 1}, keep: []string{"03T03"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keep, remove, reasons := Apply(tc.in, tc.policy)
			if diff := cmp.Diff(tc.keep, ids(keep)); diff != "" {
				t.Errorf("keep (-want +got):\n%s", diff)
			}
			if len(keep)+len(remove) != len(tc.in) {
				t.Errorf("%d kept + %d removed != %d snapshots", len(keep), len(remove), len(tc.in))
			}
			for _, r := range remove {
				if _, ok := reasons[r.ID]; ok {
					t.Errorf("removed %s has reasons %v", r.ID, reasons[r.ID])
				}
			}
			if tc.reasons != nil {
				if diff := cmp.Diff(tc.reasons, reasons); diff != "" {
					t.Errorf("reasons (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	t.Parallel()
	for _, p := range []Policy{{KeepLast: -1}, {KeepWithin: -time.Hour}, {KeepDaily: -2}, {KeepWeekly: -1}, {KeepHourly: -1}, {KeepMonthly: -1}, {KeepYearly: -1}} {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v: no error", p)
		}
	}
	if err := (Policy{KeepLast: 3, KeepDaily: 7}).Validate(); err != nil {
		t.Error(err)
	}
}

// Tags: a snapshot with a kept tag stays whatever the other rules say,
// "k" matches any value, and a tag rule alone is not the empty policy.
func TestApplyKeepTags(t *testing.T) {
	t.Parallel()
	at := func(id string, h int, tags map[string]string) Snapshot {
		return Snapshot{ID: id, Time: time.Date(2026, 11, 1, h, 0, 0, 0, time.UTC), Tags: tags}
	}
	in := []Snapshot{
		at("a", 1, map[string]string{"release": "1.0"}),
		at("b", 2, map[string]string{"release": "1.1"}),
		at("c", 3, map[string]string{"manual": ""}),
		at("d", 4, nil),
		at("e", 5, nil),
	}
	for _, tc := range []struct {
		policy Policy
		keep   []string
	}{
		{Policy{KeepLast: 1, KeepTags: []string{"release=1.0"}}, []string{"e", "a"}},
		{Policy{KeepLast: 1, KeepTags: []string{"release"}}, []string{"e", "b", "a"}},
		{Policy{KeepTags: []string{"manual"}}, []string{"c"}},
		{Policy{KeepTags: []string{"release=2.0"}}, nil},
	} {
		if tc.policy.Empty() {
			t.Fatalf("%+v reads as the empty policy", tc.policy)
		}
		keep, remove, reasons := Apply(in, tc.policy)
		var got []string
		for _, s := range keep {
			got = append(got, s.ID)
		}
		if !cmp.Equal(got, tc.keep) || len(keep)+len(remove) != len(in) {
			t.Errorf("%+v keeps %q, want %q", tc.policy, got, tc.keep)
		}
		if len(tc.policy.KeepTags) == 1 && len(keep) > 0 && tc.policy.KeepLast == 0 && reasons[keep[0].ID][0] != "tag "+tc.policy.KeepTags[0] {
			t.Errorf("reason %q", reasons[keep[0].ID])
		}
	}
	if err := (Policy{KeepTags: []string{"=x"}}).Validate(); err == nil {
		t.Error("a tag rule with an empty key validated")
	}
}
