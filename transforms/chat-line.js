// @ts-check
/**
 * One line of text for a chat channel (Slack, Teams and Mattermost take {"text"}) from a Seismic
 * LiveSend session summary: who viewed what, for how long. Other event types are skipped (null).
 */

/** @param {number} seconds */
const duration = (seconds) => (seconds >= 60 ? `${Math.floor(seconds / 60)} min ${seconds % 60} s` : `${seconds} s`);

/** @type {import("./transform").Transform} */
export default function chatLine(event) {
  const data = /** @type {Record<string, any> | null} */ (event.payload)?.data;
  if (!event.type.startsWith("livesend-session-summary") || !data) return null;
  const viewer = data.Participants?.[0]?.Email ?? "Someone";
  const content = data.LivesendSessionSummary?.Link?.Content?.map((/** @type {{Name?: string}} */ c) => c.Name).filter(Boolean) ?? [];
  const where = [data.ClientDetails?.City, data.ClientDetails?.Country].filter(Boolean).join(", ");
  const what = content.length ? content.join(", ") : `${data.TotalContent ?? 0} item(s)`;
  const seconds = typeof data.TotalDurationSeconds === "number" ? data.TotalDurationSeconds : 0;
  return { text: `${viewer} viewed ${what} for ${duration(seconds)}${where ? ` from ${where}` : ""} (LiveSend, ${data.TotalContentViewed ?? 0} of ${data.TotalContent ?? 0} viewed)` };
}
