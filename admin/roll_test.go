package admin_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
)

// A key in its grace period cannot be rolled again (409 naming the
// successor), and of concurrent rolls of one key exactly one is answered
// 201: a key never has several live successors.
func TestKeyIsRolledOnce(t *testing.T) {
	e := newEnv(t)
	r := e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "once", "scopes": []string{}, "user_id": "user_once"})
	e.MustStatus(r, 201)
	id := r.Str("id")
	r = e.Do("POST", "/v1/keys/"+id+"/roll", admintest.OperatorToken, map[string]any{"grace_seconds": 3600})
	e.MustStatus(r, 201)
	successor := r.Str("id")
	if prev, _ := r.Body["previous"].(map[string]any); prev["replaced_by"] != successor {
		t.Errorf("previous.replaced_by = %v, want %s", prev["replaced_by"], successor)
	}
	r = e.Do("POST", "/v1/keys/"+id+"/roll", admintest.OperatorToken, map[string]any{"grace_seconds": 3600})
	msg, _ := r.Body["error"].(map[string]any)["message"].(string)
	if r.Status != 409 || r.ErrorCode() != "CONFLICT" || !strings.Contains(msg, "already been rolled; its successor is "+successor) {
		t.Fatalf("second roll in the grace period: %d %s", r.Status, r.Raw)
	}

	r = e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "raced", "scopes": []string{}, "user_id": "user_once"})
	e.MustStatus(r, 201)
	raced := r.Str("id")
	const rollers = 6
	statuses := make(chan int, rollers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range rollers {
		wg.Go(func() {
			<-start
			statuses <- e.Do("POST", "/v1/keys/"+raced+"/roll", admintest.OperatorToken, map[string]any{"grace_seconds": 600}).Status
		})
	}
	close(start)
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[201] != 1 || count[409] != rollers-1 {
		t.Fatalf("%d concurrent rolls answered %v; want one 201 and the rest 409", rollers, count)
	}
}
