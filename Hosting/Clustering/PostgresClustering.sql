-- OrleansPush: the Orleans membership table on PostgreSQL, for Microsoft.Orleans.Clustering.AdoNet (invariant Npgsql).
--
-- Applied by the project itself at start (PostgresClusteringSchema.cs), by every silo and gateway, under an advisory
-- lock: it only creates what is missing and (re)writes the queries below, so running it again changes nothing.
--
-- The ADO.NET provider reads its SQL from the table OrleansQuery (QueryKey, QueryText) and runs it with parameters
-- named @DeploymentId, @Address, @Port, @Generation, @SiloName, @HostName, @Status, @ProxyPort, @StartTime,
-- @IAmAliveTime, @SuspectTimes and @Version. Reads must return the columns Version, Address, Port, Generation,
-- SiloName, HostName, Status, ProxyPort, SuspectTimes, StartTime and IAmAliveTime (a row carrying only Version when
-- the deployment has no silo yet); writes guarded by the table version return one number: 1 when they applied,
-- 0 when the version had moved on (another silo wrote first).

CREATE TABLE IF NOT EXISTS OrleansQuery
(
    QueryKey varchar(64) NOT NULL PRIMARY KEY,
    QueryText text NOT NULL
);

-- One row per deployment (cluster id): the version that makes membership writes optimistic.
CREATE TABLE IF NOT EXISTS orleanspush_membership_version
(
    deployment_id text NOT NULL PRIMARY KEY,
    version integer NOT NULL DEFAULT 0,
    changed_at timestamptz NOT NULL DEFAULT now()
);

-- One row per silo incarnation (address, port, generation).
CREATE TABLE IF NOT EXISTS orleanspush_membership
(
    deployment_id text NOT NULL REFERENCES orleanspush_membership_version (deployment_id) ON DELETE CASCADE,
    address text NOT NULL,
    port integer NOT NULL,
    generation integer NOT NULL,
    silo_name text,
    host_name text NOT NULL,
    status integer NOT NULL,
    proxy_port integer,
    suspect_times text,
    start_time timestamptz NOT NULL,
    i_am_alive_time timestamptz NOT NULL,
    PRIMARY KEY (deployment_id, address, port, generation)
);

INSERT INTO OrleansQuery (QueryKey, QueryText) VALUES

('InsertMembershipVersionKey', $q$
WITH created AS (
    INSERT INTO orleanspush_membership_version (deployment_id) VALUES (@DeploymentId::text)
    ON CONFLICT (deployment_id) DO NOTHING
    RETURNING 1)
SELECT count(*)::integer FROM created
$q$),

('InsertMembershipKey', $q$
WITH bumped AS (
    UPDATE orleanspush_membership_version SET version = version + 1, changed_at = now()
    WHERE deployment_id = @DeploymentId::text AND version = @Version::integer
    RETURNING deployment_id),
inserted AS (
    INSERT INTO orleanspush_membership
        (deployment_id, address, port, generation, silo_name, host_name, status, proxy_port, start_time, i_am_alive_time)
    SELECT deployment_id, @Address::text, @Port::integer, @Generation::integer, @SiloName::text, @HostName::text,
           @Status::integer, @ProxyPort::integer, @StartTime::timestamptz, @IAmAliveTime::timestamptz
    FROM bumped
    ON CONFLICT (deployment_id, address, port, generation) DO NOTHING
    RETURNING 1)
SELECT count(*)::integer FROM inserted
$q$),

('UpdateMembershipKey', $q$
WITH bumped AS (
    UPDATE orleanspush_membership_version SET version = version + 1, changed_at = now()
    WHERE deployment_id = @DeploymentId::text AND version = @Version::integer
    RETURNING deployment_id),
updated AS (
    UPDATE orleanspush_membership AS m
    SET status = @Status::integer,
        suspect_times = @SuspectTimes::text,
        i_am_alive_time = greatest(m.i_am_alive_time, @IAmAliveTime::timestamptz)
    FROM bumped
    WHERE m.deployment_id = bumped.deployment_id
      AND m.address = @Address::text AND m.port = @Port::integer AND m.generation = @Generation::integer
    RETURNING 1)
SELECT count(*)::integer FROM updated
$q$),

('UpdateIAmAlivetimeKey', $q$
UPDATE orleanspush_membership
SET i_am_alive_time = greatest(i_am_alive_time, @IAmAliveTime::timestamptz)
WHERE deployment_id = @DeploymentId::text
  AND address = @Address::text AND port = @Port::integer AND generation = @Generation::integer
$q$),

('MembershipReadAllKey', $q$
SELECT v.version AS "Version", m.address AS "Address", m.port AS "Port", m.generation AS "Generation",
       m.silo_name AS "SiloName", m.host_name AS "HostName", m.status AS "Status", m.proxy_port AS "ProxyPort",
       m.suspect_times AS "SuspectTimes", m.start_time AS "StartTime", m.i_am_alive_time AS "IAmAliveTime"
FROM orleanspush_membership_version AS v
LEFT JOIN orleanspush_membership AS m ON m.deployment_id = v.deployment_id
WHERE v.deployment_id = @DeploymentId::text
$q$),

('MembershipReadRowKey', $q$
SELECT v.version AS "Version", m.address AS "Address", m.port AS "Port", m.generation AS "Generation",
       m.silo_name AS "SiloName", m.host_name AS "HostName", m.status AS "Status", m.proxy_port AS "ProxyPort",
       m.suspect_times AS "SuspectTimes", m.start_time AS "StartTime", m.i_am_alive_time AS "IAmAliveTime"
FROM orleanspush_membership_version AS v
LEFT JOIN orleanspush_membership AS m ON m.deployment_id = v.deployment_id
    AND m.address = @Address::text AND m.port = @Port::integer AND m.generation = @Generation::integer
WHERE v.deployment_id = @DeploymentId::text
$q$),

('GatewaysQueryKey', $q$
SELECT address AS "Address", proxy_port AS "ProxyPort", generation AS "Generation"
FROM orleanspush_membership
WHERE deployment_id = @DeploymentId::text AND status = @Status::integer AND proxy_port > 0
$q$),

('DeleteMembershipTableEntriesKey', $q$
DELETE FROM orleanspush_membership_version WHERE deployment_id = @DeploymentId::text
$q$),

('CleanupDefunctSiloEntriesKey', $q$
DELETE FROM orleanspush_membership
WHERE deployment_id = @DeploymentId::text AND i_am_alive_time < @IAmAliveTime::timestamptz AND status = 6
$q$),

('CleanupDefunctSiloEntryKey', $q$
DELETE FROM orleanspush_membership
WHERE deployment_id = @DeploymentId::text AND status = 6
  AND address = @Address::text AND port = @Port::integer AND generation = @Generation::integer
$q$)

ON CONFLICT (QueryKey) DO UPDATE SET QueryText = EXCLUDED.QueryText;
