package pgkit

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPlanColumnsAndMasking(t *testing.T) {
	for _, c := range []struct {
		alias string
		exprs []string
		want  []string
	}{
		{"m", []string{"((m.conversation_id = $1) AND (m.role <> 'system'::text))"}, []string{"conversation_id"}},
		{"m", []string{"((m.created_at > $2) AND ($1 = m.tenant_id))"}, []string{"tenant_id", "created_at"}},
		{"m", []string{"", "(m.conversation_id = c.id)"}, []string{"conversation_id"}},
		{"c", []string{"(m.conversation_id = c.id)"}, []string{"id"}},
		{"m", []string{"((m.content)::text ~~ '%x%'::text)"}, nil},
		{"m", []string{"((m.tokens)::numeric >= 10.5)"}, []string{"tokens"}},
	} {
		require.Equal(t, c.want, columnsOf(c.alias, c.exprs), "%v", c.exprs)
	}
	require.Equal(t, "((m.role <> ?::text) AND (m.tokens > ?) AND (m.id = $12) AND (m.col1 = ?))",
		maskLiterals("((m.role <> 'it''s secret'::text) AND (m.tokens > 42.5) AND (m.id = $12) AND (m.col1 = 7))"))
	for sql, want := range map[string]bool{
		"SELECT 1": true, " with x as (select 1) select * from x": true, "UPDATE t SET a = 1;": true,
		"SELECT 1; SELECT 2": false, "CREATE INDEX ON t (a)": false, "(SELECT 1)": true, "VACUUM t": false,
	} {
		require.Equal(t, want, explainable(sql), sql)
	}
}
