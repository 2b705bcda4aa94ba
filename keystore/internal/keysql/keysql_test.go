package keysql

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/keystore"
)

var (
	dollar   = Dialect{Placeholder: func(n int) string { return "$" + strconv.Itoa(n) }, Time: func(t time.Time) any { return t }}
	question = Dialect{Placeholder: func(int) string { return "?" }, Time: func(t time.Time) any { return t.UnixMicro() }}
)

func TestListKeys(t *testing.T) {
	revoked := true
	for _, tc := range []struct {
		name     string
		d        Dialect
		opts     keystore.ListKeysOptions
		after    []any
		wantSQL  string
		wantArgs []any
	}{
		{"all", dollar, keystore.ListKeysOptions{}, nil,
			`SELECT c FROM api_keys ORDER BY created_at DESC, id DESC LIMIT $1`, []any{11}},
		{"every filter", dollar, keystore.ListKeysOptions{UserID: "u", OrgID: "o", PersonalOnly: true, Revoked: &revoked}, []any{"at", "key_1"},
			`SELECT c FROM api_keys WHERE user_id = $1 AND org_id = $2 AND org_id = '' AND revoked_at IS NOT NULL AND (created_at, id) < ($3, $4) ORDER BY created_at DESC, id DESC LIMIT $5`,
			[]any{"u", "o", "at", "key_1", 11}},
		{"active, question marks", question, keystore.ListKeysOptions{UserID: "u", Revoked: new(bool)}, nil,
			`SELECT c FROM api_keys WHERE user_id = ? AND revoked_at IS NULL ORDER BY created_at DESC, id DESC LIMIT ?`, []any{"u", 11}},
	} {
		sql, args := ListKeys(tc.d, "c", tc.opts, tc.after, 10)
		if diff := cmp.Diff(tc.wantSQL, sql); diff != "" {
			t.Errorf("%s: SQL (-want, +got):\n%s", tc.name, diff)
		}
		if diff := cmp.Diff(tc.wantArgs, args); diff != "" {
			t.Errorf("%s: args (-want, +got):\n%s", tc.name, diff)
		}
	}
}

func TestListAudit(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	sql, args, err := ListAudit(question, keystore.AuditFilter{Owners: []string{"o1", "o2"}, Action: "key.created", Since: at, Until: at, Cursor: "7"}, 5)
	if err != nil {
		t.Fatal(err)
	}
	want := `SELECT id, at, actor, action, target, owner, request_id, details FROM audit_events WHERE owner IN (?, ?) AND action = ? AND at >= ? AND at < ? AND id < ? ORDER BY id DESC LIMIT ?`
	if diff := cmp.Diff(want, sql); diff != "" {
		t.Errorf("SQL (-want, +got):\n%s", diff)
	}
	if diff := cmp.Diff([]any{"o1", "o2", "key.created", at.UnixMicro(), at.UnixMicro(), int64(7), 6}, args); diff != "" {
		t.Errorf("args (-want, +got):\n%s", diff)
	}
	for _, c := range []string{"x", "0", "-3"} {
		if _, _, err := ListAudit(dollar, keystore.AuditFilter{Cursor: c}, 5); !errors.Is(err, keystore.ErrInvalid) {
			t.Errorf("cursor %q: %v, want ErrInvalid", c, err)
		}
	}
}

func TestPage(t *testing.T) {
	cursor := func(n int) string { return strconv.Itoa(n) }
	for _, tc := range []struct {
		rows     []int
		want     []int
		wantNext string
	}{
		{nil, nil, ""},
		{[]int{1, 2}, []int{1, 2}, ""},
		{[]int{1, 2, 3}, []int{1, 2, 3}, ""},
		{[]int{1, 2, 3, 4}, []int{1, 2, 3}, "3"},
	} {
		got, next := Page(tc.rows, 3, cursor)
		if diff := cmp.Diff(tc.want, got); diff != "" || next != tc.wantNext {
			t.Errorf("Page(%v, 3): next %q, want %q; rows (-want, +got):\n%s", tc.rows, next, tc.wantNext, diff)
		}
	}
}
