package ssmtest

import (
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Auto Scaling, query protocol with XML answers: the calls the dispatcher
// and the workers make (DescribeAutoScalingGroups, SetDesiredCapacity,
// CompleteLifecycleAction, RecordLifecycleActionHeartbeat,
// SetInstanceProtection), and a small model of a group with a warm pool of
// stopped instances reused on scale-in.

const asgNamespace = "http://autoscaling.amazonaws.com/doc/2011-01-01/"

// Group is an Auto Scaling group with a warm pool (pool state Stopped,
// ReuseOnScaleIn): scale-out starts a warm instance, scale-in sends one
// back to the pool, stopped, once its lifecycle hook completes.
type Group struct {
	Name string
	Hook string // the termination lifecycle hook's name
	// ReadyHook, when set, is a launch hook: its completion is recorded
	// (a started instance is ready), nothing else.
	ReadyHook string
	Min, Max  int
	// InService and Warm are instance IDs among Options.Instances: in the
	// group, and stopped in its warm pool.
	InService []string
	Warm      []string
	// Desired is the desired capacity; New sets it to len(InService).
	Desired int
}

// LifecycleAction is one CompleteLifecycleAction call.
type LifecycleAction struct {
	Group, Hook, Instance, Result string
	At                            time.Time // when it was received
}

func (s *Server) serveAutoScaling(w http.ResponseWriter, _ *http.Request, body []byte) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		s.t.Errorf("Auto Scaling body %q: %v", body, err)
	}
	if v := form.Get("Version"); v != "2011-01-01" {
		s.t.Errorf("Auto Scaling Version %q, want 2011-01-01", v)
	}
	op := form.Get("Action")
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.record(Request{Service: "autoscaling", Op: op, Form: form}); e != nil {
		asgError(w, e)
		return
	}
	g := s.group
	name := form.Get("AutoScalingGroupName")
	if op == "DescribeAutoScalingGroups" {
		s.describeGroups(w, form)
		return
	}
	if g == nil || name != g.Name {
		asgError(w, &Error{400, "ValidationError", "AutoScalingGroup name not found - no such group: " + name})
		return
	}
	switch op {
	case "SetDesiredCapacity":
		n, err := strconv.Atoi(form.Get("DesiredCapacity"))
		if err != nil || n < g.Min || n > g.Max {
			asgError(w, &Error{400, "ValidationError", "New SetDesiredCapacity value " + form.Get("DesiredCapacity") + " is outside the group's min/max"})
			return
		}
		s.setDesired(n)
	case "CompleteLifecycleAction":
		id := form.Get("InstanceId")
		if h := form.Get("LifecycleHookName"); g.ReadyHook != "" && h == g.ReadyHook && s.instances[id] != nil {
			s.lifecycle = append(s.lifecycle, LifecycleAction{name, h, id, form.Get("LifecycleActionResult"), time.Now()})
			break
		}
		inst := s.instances[id]
		if inst == nil || form.Get("LifecycleHookName") != g.Hook || !strings.Contains(inst.Lifecycle, ":") && inst.Lifecycle != "Terminated" {
			asgError(w, &Error{400, "ValidationError", "No active Lifecycle Action found with instance ID " + id})
			return
		}
		s.lifecycle = append(s.lifecycle, LifecycleAction{name, form.Get("LifecycleHookName"), id, form.Get("LifecycleActionResult"), time.Now()})
		s.leave(id)
	case "RecordLifecycleActionHeartbeat":
	case "SetInstanceProtection":
		on := form.Get("ProtectedFromScaleIn") == "true"
		for _, id := range listParam(form, "InstanceIds.member") {
			if !slices.Contains(g.InService, id) {
				asgError(w, &Error{400, "ValidationError", "The instance " + id + " is not part of Auto Scaling group " + name})
				return
			}
			s.instances[id].Protected = on
		}
	default:
		if s.standby(w, op, form) { // ebs.go
			return
		}
		s.t.Errorf("unexpected Auto Scaling action %s", op)
		asgError(w, &Error{400, "InvalidAction", op})
		return
	}
	s.asgReply(w, op, nil)
}

// setDesired starts warm instances or takes in-service ones out (the
// newest unprotected first) to reach n. s.mu is held.
func (s *Server) setDesired(n int) {
	g := s.group
	g.Desired = n
	for len(g.InService) < n && len(g.Warm) > 0 {
		id := g.Warm[0]
		g.Warm = g.Warm[1:]
		g.InService = append(g.InService, id)
		s.instances[id].Lifecycle = "InService"
		s.start(id)
	}
	leaving := 0
	for _, id := range g.InService {
		if s.instances[id].Lifecycle != "InService" {
			leaving++
		}
	}
	for i := len(g.InService) - 1; i >= 0 && len(g.InService)-leaving > n; i-- {
		inst := s.instances[g.InService[i]]
		if inst.Lifecycle == "InService" && !inst.Protected {
			s.scaleIn(g.InService[i])
			leaving++
		}
	}
}

// scaleIn starts taking an instance out: IMDS shows the target state
// Warmed:Stopped and the group waits for the hook's completion.
func (s *Server) scaleIn(id string) { s.instances[id].Lifecycle = "Warmed:Stopped" }

// ScaleIn takes one in-service instance out of the group, as a scale-in
// or an instance refresh does, whatever its protection: the group waits
// for CompleteLifecycleAction, then stops it into the warm pool.
func (s *Server) ScaleIn(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.group == nil || !slices.Contains(s.group.InService, id) {
		s.t.Fatalf("ssmtest: %s is not in service in a group", id)
	}
	s.group.Desired--
	s.scaleIn(id)
}

// Kill terminates an instance behind the group's back (a hardware
// failure, a Spot reclaim without a drain): it leaves the group at once,
// whose desired capacity drops by one (a replacement is not modelled).
func (s *Server) Kill(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.instances[id]
	inst.State, inst.Ping, inst.Lifecycle = "terminated", "ConnectionLost", ""
	if g := s.group; g != nil && slices.Contains(g.InService, id) {
		g.InService = slices.DeleteFunc(g.InService, func(x string) bool { return x == id })
		g.Desired--
	}
}

// SpotInterrupt posts a Spot interruption notice on the instance's IMDS.
func (s *Server) SpotInterrupt(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.instances[id].SpotAction = `{"action": "terminate", "time": "` + s.now().Add(2*60e9).UTC().Format("2006-01-02T15:04:05Z") + `"}`
}

// leave completes an instance's exit: back to the warm pool, stopped.
// s.mu is held.
func (s *Server) leave(id string) {
	g := s.group
	inst := s.instances[id]
	g.InService = slices.DeleteFunc(g.InService, func(x string) bool { return x == id })
	g.Warm = append(g.Warm, id)
	inst.Lifecycle, inst.State, inst.Ping, inst.Protected = "Warmed:Stopped", "stopped", "ConnectionLost", false
}

// LifecycleActions returns the CompleteLifecycleAction calls received.
func (s *Server) LifecycleActions() []LifecycleAction {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lifecycle)
}

// GroupState returns the group as it is now.
func (s *Server) GroupState() Group {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := *s.group
	g.InService, g.Warm = slices.Clone(g.InService), slices.Clone(g.Warm)
	return g
}

func (s *Server) describeGroups(w http.ResponseWriter, form url.Values) {
	type instance struct {
		InstanceID           string `xml:"InstanceId"`
		LifecycleState       string `xml:"LifecycleState"`
		HealthStatus         string `xml:"HealthStatus"`
		AvailabilityZone     string `xml:"AvailabilityZone"`
		ProtectedFromScaleIn bool   `xml:"ProtectedFromScaleIn"`
	}
	type group struct {
		Name      string     `xml:"AutoScalingGroupName"`
		Min       int        `xml:"MinSize"`
		Max       int        `xml:"MaxSize"`
		Desired   int        `xml:"DesiredCapacity"`
		Instances []instance `xml:"Instances>member"`
	}
	var groups []group
	names := listParam(form, "AutoScalingGroupNames.member")
	if g := s.group; g != nil && (len(names) == 0 || slices.Contains(names, g.Name)) {
		x := group{Name: g.Name, Min: g.Min, Max: g.Max, Desired: g.Desired}
		for _, id := range g.InService {
			inst := s.instances[id]
			state := "InService"
			switch {
			case s.ebs.standby[id]:
				state = "Standby"
			case inst.Lifecycle != "InService":
				state = "Terminating:Wait"
			case inst.State == "pending":
				state = "Pending"
			}
			x.Instances = append(x.Instances, instance{id, state, "Healthy", "us-east-1a", inst.Protected})
		}
		groups = append(groups, x)
	}
	s.asgReply(w, "DescribeAutoScalingGroups", struct {
		XMLName xml.Name `xml:"Result"`
		Groups  []group  `xml:"AutoScalingGroups>member"`
	}{Groups: groups})
}

func (s *Server) asgReply(w http.ResponseWriter, op string, result any) {
	w.Header().Set("Content-Type", "text/xml")
	type meta struct {
		RequestID string `xml:"RequestId"`
	}
	var inner []byte
	if result != nil {
		b, err := xml.Marshal(result)
		if err != nil {
			s.t.Errorf("marshal Auto Scaling reply: %v", err)
		}
		// The result's own element name is replaced by <OpResult>.
		b = b[strings.IndexByte(string(b), '>')+1 : strings.LastIndexByte(string(b), '<')]
		inner = b
	}
	io.WriteString(w, `<`+op+`Response xmlns="`+asgNamespace+`"><`+op+`Result>`)
	w.Write(inner)
	io.WriteString(w, `</`+op+`Result><ResponseMetadata><RequestId>00000000-0000-4000-8000-000000000006</RequestId></ResponseMetadata></`+op+`Response>`)
}

func asgError(w http.ResponseWriter, e *Error) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(e.Status)
	out, _ := xml.Marshal(struct {
		XMLName   xml.Name `xml:"ErrorResponse"`
		Xmlns     string   `xml:"xmlns,attr"`
		Type      string   `xml:"Error>Type"`
		Code      string   `xml:"Error>Code"`
		Message   string   `xml:"Error>Message"`
		RequestID string   `xml:"RequestId"`
	}{Xmlns: asgNamespace, Type: "Sender", Code: e.Code, Message: e.Message, RequestID: "00000000-0000-4000-8000-000000000007"})
	w.Write(out)
}
