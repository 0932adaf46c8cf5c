// @ts-check
/**
 * A flat CRM contact from Zuddl's TIME_SPENT_IN_SESSION: who attended which session, and for how
 * long. Other actions, or one without a registration profile, are skipped (null).
 */

/** @param {unknown} value */
const text = (value) => (typeof value === "string" && value !== "" ? value : null);

/** @type {import("./transform").Transform} */
export default function crmContact(event) {
  const payload = /** @type {Record<string, any> | null} */ (event.payload);
  if (event.type !== "TIME_SPENT_IN_SESSION" || !payload?.registration?.profile) return null;
  const profile = payload.registration.profile;
  return {
    email: text(profile.email),
    first_name: text(profile.firstName),
    last_name: text(profile.lastName),
    company: text(profile.company),
    job_title: text(profile.designation),
    country: text(profile.country),
    phone: text(profile.phoneNumber),
    event_name: text(payload.event?.name),
    session_title: text(payload.session?.title),
    minutes_in_session: typeof payload.timeSpentInMinutes === "number" ? payload.timeSpentInMinutes : null,
    source_event_id: event.eventId,
    occurred_at: event.occurredAt,
  };
}
