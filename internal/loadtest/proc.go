package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// Linux fixes it at 100 for user space whatever the kernel's HZ.
const clockTicks = 100

// Process is a server the harness started as a child process, so that its
// CPU time and memory can be read apart from the load generator's.
type Process struct {
	Name string
	// Addrs are the listen addresses the server logged once serving
	// (grpc, http, ops).
	Addrs map[string]string
	cmd   *exec.Cmd
	done  chan struct{}
	err   error
	log   *os.File
	// remote is set for a deployment the harness did not start (no
	// child process: no cmd, done or log).
	remote *remoteServer
}

// grpcAddrs are the Check addresses of every replica of the server.
func (p *Process) grpcAddrs() []string {
	if p.remote != nil {
		return p.remote.grpc
	}
	return []string{p.Addrs["grpc"]}
}

// counters reads the server's watched counters (summed over the replicas
// of a remote deployment).
func (p *Process) counters(ctx context.Context) (counters, error) {
	if p.remote != nil {
		return scrapeAll(ctx, p.remote.ops)
	}
	return scrapeCounters(ctx, p.Addrs["ops"])
}

// processSpec describes a child to start.
type processSpec struct {
	name string
	argv []string
	env  []string // added to the harness's environment
	// readyMsg is the "msg" of the JSON log line the server writes once
	// its listeners are open; the line's grpc, http and ops fields are
	// the addresses (the children listen on port 0).
	readyMsg string
	// cpus pins the child with taskset -c when not empty.
	cpus    string
	logPath string
	timeout time.Duration
}

// startProcess starts the child and waits for its ready line.
func startProcess(ctx context.Context, spec processSpec) (*Process, error) {
	argv := spec.argv
	if spec.cpus != "" {
		argv = append([]string{"taskset", "-c", spec.cpus}, argv...)
	}
	logFile, err := os.Create(spec.logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: log file: %w", spec.name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(childEnv(), spec.env...)
	cmd.Stdout = logFile
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", spec.name, err)
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", spec.name, err)
	}
	p := &Process{Name: spec.name, cmd: cmd, done: make(chan struct{}), log: logFile}
	ready := make(chan map[string]string, 1)
	go p.readLog(stderr, spec.readyMsg, ready)
	go func() { p.err = cmd.Wait(); close(p.done) }()

	timeout := spec.timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	select {
	case p.Addrs = <-ready:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("start %s: exited before serving (%v); see %s", spec.name, p.err, spec.logPath)
	case <-time.After(timeout):
		p.Stop()
		return nil, fmt.Errorf("start %s: not serving after %s; see %s", spec.name, timeout, spec.logPath)
	case <-ctx.Done():
		p.Stop()
		return nil, fmt.Errorf("start %s: %w", spec.name, ctx.Err())
	}
}

// readLog copies the child's stderr to its log file and reports the
// addresses of its ready line.
func (p *Process) readLog(r io.Reader, readyMsg string, ready chan<- map[string]string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for sc.Scan() {
		line := sc.Bytes()
		_, _ = p.log.Write(line)
		_, _ = p.log.Write([]byte{'\n'})
		if sent || !bytes.Contains(line, []byte(readyMsg)) {
			continue
		}
		var rec map[string]any
		if json.Unmarshal(line, &rec) != nil || rec["msg"] != readyMsg {
			continue
		}
		addrs := map[string]string{}
		for _, k := range []string{"grpc", "http", "ops"} {
			if s, ok := rec[k].(string); ok && s != "" {
				addrs[k] = s
			}
		}
		ready <- addrs
		sent = true
	}
	_, _ = io.Copy(io.Discard, r)
}

// PID is the child's process id (taskset execs the server in place).
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Stop asks the child to drain (SIGTERM) and kills it after 15 s.
func (p *Process) Stop() {
	if p.remote != nil {
		return
	}
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	_ = p.log.Close()
}

// Alive reports whether the child is still running.
func (p *Process) Alive() bool {
	if p.remote != nil {
		return true
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// CPUTime returns the user plus system CPU time the process has used, all
// threads included, from /proc/<pid>/stat (10 ms resolution).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time: %w", err)
	}
	// The command name (field 2) may hold spaces: split after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("read CPU time: unexpected /proc stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("read CPU time: short /proc stat line")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, errors.New("read CPU time: bad utime/stime")
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// RSS returns the resident set size of the process (VmRSS), in bytes.
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read RSS: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("read RSS: %w", err)
				}
				return kb << 10, nil
			}
		}
	}
	return 0, errors.New("read RSS: no VmRSS line")
}

// LoadAvg returns the first three fields of /proc/loadavg ("1.02 0.87 0.55").
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// pinSelf pins every thread of the harness process to cpus with taskset -a.
func pinSelf(cpus string) error {
	out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset the load generator to CPUs %s: %v: %s", cpus, err, bytes.TrimSpace(out))
	}
	return nil
}
