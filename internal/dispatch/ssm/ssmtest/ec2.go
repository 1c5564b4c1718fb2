package ssmtest

import (
	"cmp"
	"encoding/xml"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// EC2, query protocol with XML answers.

const ec2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

func (s *Server) serveEC2(w http.ResponseWriter, r *http.Request, body []byte) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		s.t.Errorf("EC2 request Content-Type %q, want application/x-www-form-urlencoded", ct)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		s.t.Errorf("EC2 body %q: %v", body, err)
	}
	if v := form.Get("Version"); v != "2016-11-15" {
		s.t.Errorf("EC2 Version %q, want 2016-11-15", v)
	}
	op := form.Get("Action")
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.record(Request{Service: "ec2", Op: op, Form: form}); e != nil {
		s.ec2Error(w, e)
		return
	}
	switch op {
	case "DescribeInstances":
		s.describeInstances(w, form)
	case "StartInstances":
		s.startInstances(w, form)
	default:
		if s.serveEBS(w, op, form) { // ebs.go
			return
		}
		s.t.Errorf("unexpected EC2 action %s", op)
		s.ec2Error(w, &Error{400, "InvalidAction", "The action " + op + " is not valid for this web service."})
	}
}

func (s *Server) ec2Error(w http.ResponseWriter, e *Error) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(e.Status)
	type xmlErr struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	out, _ := xml.Marshal(struct {
		XMLName   xml.Name `xml:"Response"`
		Errors    []xmlErr `xml:"Errors>Error"`
		RequestID string   `xml:"RequestID"`
	}{Errors: []xmlErr{{e.Code, e.Message}}, RequestID: "00000000-0000-4000-8000-000000000003"})
	io.WriteString(w, xml.Header)
	w.Write(out)
}

func (s *Server) ec2Reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	out, err := xml.Marshal(v)
	if err != nil {
		s.t.Errorf("marshal EC2 reply: %v", err)
	}
	io.WriteString(w, xml.Header)
	w.Write(out)
}

// listParam returns the values of a query list: InstanceId.1, InstanceId.2...
func listParam(form url.Values, prefix string) []string {
	var vs []string
	for i := 1; form.Has(prefix + "." + strconv.Itoa(i)); i++ {
		vs = append(vs, form.Get(prefix+"."+strconv.Itoa(i)))
	}
	return vs
}

type ec2State struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

var ec2StateCodes = map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}

func stateOf(name string) ec2State { return ec2State{ec2StateCodes[name], name} }

func notFound(id string) *Error {
	return &Error{400, "InvalidInstanceID.NotFound", "The instance ID '" + id + "' does not exist"}
}

func (s *Server) describeInstances(w http.ResponseWriter, form url.Values) {
	type tag struct {
		Key   string `xml:"key"`
		Value string `xml:"value"`
	}
	type cpu struct {
		CoreCount      int `xml:"coreCount"`
		ThreadsPerCore int `xml:"threadsPerCore"`
	}
	type instance struct {
		InstanceID string   `xml:"instanceId"`
		State      ec2State `xml:"instanceState"`
		Tags       []tag    `xml:"tagSet>item"`
		CPU        cpu      `xml:"cpuOptions"`
		AZ         string   `xml:"placement>availabilityZone"`
	}
	type reservation struct {
		ReservationID string     `xml:"reservationId"`
		OwnerID       string     `xml:"ownerId"`
		Instances     []instance `xml:"instancesSet>item"`
	}
	ids := listParam(form, "InstanceId")
	for _, id := range ids {
		if s.instances[id] == nil {
			s.ec2Error(w, notFound(id))
			return
		}
	}
	filters := map[string][]string{}
	for i := 1; form.Has("Filter." + strconv.Itoa(i) + ".Name"); i++ {
		p := "Filter." + strconv.Itoa(i)
		filters[form.Get(p+".Name")] = listParam(form, p+".Value")
	}
	var res []reservation
	defer s.ebsStep() // a stopping instance is stopped by the next call
	for _, id := range slices.Sorted(maps.Keys(s.instances)) {
		inst := s.instances[id]
		if len(ids) > 0 && !slices.Contains(ids, id) {
			continue
		}
		match := true
		for name, values := range filters {
			switch {
			case name == "instance-state-name":
				match = match && slices.Contains(values, inst.State)
			case strings.HasPrefix(name, "tag:"):
				v, ok := inst.Tags[strings.TrimPrefix(name, "tag:")]
				match = match && ok && slices.Contains(values, v)
			default:
				s.ec2Error(w, &Error{400, "InvalidParameterValue", "The filter '" + name + "' is invalid"})
				return
			}
		}
		if !match {
			continue
		}
		x := instance{InstanceID: id, State: stateOf(inst.State), CPU: cpu{cmp.Or(inst.VCPUs, 2), 1}, AZ: cmp.Or(inst.AZ, "us-east-1a")}
		for k, v := range inst.Tags {
			x.Tags = append(x.Tags, tag{k, v})
		}
		res = append(res, reservation{"r-" + strings.TrimPrefix(id, "i-"), "123456789012", []instance{x}})
	}
	s.ec2Reply(w, struct {
		XMLName      xml.Name      `xml:"DescribeInstancesResponse"`
		Xmlns        string        `xml:"xmlns,attr"`
		RequestID    string        `xml:"requestId"`
		Reservations []reservation `xml:"reservationSet>item"`
	}{Xmlns: ec2Namespace, RequestID: "00000000-0000-4000-8000-000000000004", Reservations: res})
}

func (s *Server) startInstances(w http.ResponseWriter, form url.Values) {
	s.changeStates(w, form, "StartInstances", "00000000-0000-4000-8000-000000000005", func(id string, inst *Instance) *Error {
		if inst.State == "stopping" {
			return &Error{400, "IncorrectInstanceState", "The instance '" + id + "' is not in a state from which it can be started."}
		}
		if inst.State == "stopped" {
			s.start(id)
		}
		return nil
	})
}

// changeStates answers StartInstances and StopInstances: step changes each
// named instance (or refuses, which answers the whole call with its
// error), and the reply lists each one's previous and current state, as
// EC2's does.
func (s *Server) changeStates(w http.ResponseWriter, form url.Values, op, requestID string, step func(id string, inst *Instance) *Error) {
	type change struct {
		InstanceID string   `xml:"instanceId"`
		Current    ec2State `xml:"currentState"`
		Previous   ec2State `xml:"previousState"`
	}
	var changes []change
	for _, id := range listParam(form, "InstanceId") {
		inst := s.instances[id]
		if inst == nil {
			s.ec2Error(w, notFound(id))
			return
		}
		prev := inst.State
		if err := step(id, inst); err != nil {
			s.ec2Error(w, err)
			return
		}
		changes = append(changes, change{id, stateOf(inst.State), stateOf(prev)})
	}
	s.ec2Reply(w, struct {
		XMLName   xml.Name
		Xmlns     string   `xml:"xmlns,attr"`
		RequestID string   `xml:"requestId"`
		Instances []change `xml:"instancesSet>item"`
	}{XMLName: xml.Name{Local: op + "Response"}, Xmlns: ec2Namespace, RequestID: requestID, Instances: changes})
}

// start makes a stopped instance pending; it comes online after its
// OnlineAfter answers or its StartLatency. s.mu is held.
func (s *Server) start(id string) {
	inst := s.instances[id]
	inst.State = "pending"
	if inst.StartLatency > 0 {
		time.AfterFunc(inst.StartLatency, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if inst.State == "pending" {
				s.online(id)
			}
		})
	}
}
