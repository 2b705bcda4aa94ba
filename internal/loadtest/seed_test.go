package loadtest

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestSeedCopiesKeysAndReusesASeededDatabase(t *testing.T) {
	db := testenv.Postgres(t)
	ctx := context.Background()
	keys := Keys{Seed: "seed-test"}

	res, err := Seed(ctx, db, keys, 1500, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if res.Reused || res.Keys != 1500 {
		t.Fatalf("first seed: %+v, want 1500 keys copied", res)
	}
	again, err := Seed(ctx, db, keys, 1500, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if !again.Reused {
		t.Errorf("second seed of the same set: %+v, want reused", again)
	}

	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, i := range []int{0, 777, 1499} {
		h := keystore.HashKey(keys.Known(i))
		var id, hint, tier string
		if err := conn.QueryRow(ctx, `SELECT id, hint, tier FROM api_keys WHERE key_hash = $1`, h[:]).Scan(&id, &hint, &tier); err != nil {
			t.Fatalf("key %d not found by its hash: %v", i, err)
		}
		if id != keys.ID(i) || hint != keystore.KeyHint(keys.Known(i)) || tier != "enterprise" {
			t.Errorf("key %d stored as %s %s %s", i, id, hint, tier)
		}
	}
	h := keystore.HashKey(keys.Unknown(0))
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM api_keys WHERE key_hash = $1`, h[:]).Scan(&n); err != nil || n != 0 {
		t.Errorf("an unknown key is in the table (count %d, err %v)", n, err)
	}

	// A different size reseeds.
	smaller, err := Seed(ctx, db, keys, 300, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if smaller.Reused || smaller.Keys != 300 {
		t.Errorf("reseed with 300 keys: %+v", smaller)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM api_keys`).Scan(&n); err != nil || n != 300 {
		t.Errorf("after reseeding: %d keys (err %v), want 300", n, err)
	}
}
