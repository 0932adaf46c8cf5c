// The comparison point for the end-to-end benchmark: a bare Hono route on the same runtime.
import { Hono } from "hono";

const app = new Hono();
app.get("/healthz", (c) => c.text("ok"));
app.post("/webhooks/:provider", async (c) => {
  await c.req.arrayBuffer();
  return c.json({ status: "accepted" });
});

export default app;
