package memory_test
import ("testing"; "strings"; "time"; "math/rand"; "context"; "github.com/tenantmem/tenantmem/internal/memory"; "github.com/tenantmem/tenantmem/internal/embed"; "github.com/tenantmem/tenantmem/internal/registry")
func TestZZIngestTiming(t *testing.T){
 e := newEnvDim(t, 384)
 b384, _ := embed.NewBuiltin(384)
 eng := newEngine(t, b384)
 words := strings.Fields("the quick brown fox jumps over lazy dog database tenant memory search vector index chunk parent child")
 r := rand.New(rand.NewSource(1))
 for _, mb := range []int{2, 10} {
  var b strings.Builder
  for b.Len() < mb<<20 - 100 { b.WriteString(words[r.Intn(len(words))]); if r.Intn(12)==0 { b.WriteString(".\n\n") } else { b.WriteByte(' ') } }
  s := e.tenant(t, registry.TierShared)
  s.StatementTimeout = 30*time.Second
  st := time.Now()
  res, err := eng.AddDocument(context.Background(), s, memory.DocumentAddParams{DocumentName: "big", DocumentType: "text", Content: b.String()})
  t.Logf("%dMB: %+v in %s err=%v", mb, res.ChunksCreated, time.Since(st), err)
 }
}
