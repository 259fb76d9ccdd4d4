using Npgsql;
using NpgsqlTypes;

namespace OrleansPush.Grains.History;

/// <summary>
/// History in PostgreSQL: a row per topic (epoch, head, and its latest value when it has one, see
/// <see cref="LatestChange"/>: it lives as long as the row, beyond the messages' bounds), a row per message, and a row per idempotency key (its
/// position and expiry). An append is one call of the <c>{prefix}_append</c> function (one round trip, one
/// transaction): it locks the topic's row, checks the stored epoch and head (the compare-and-set), starts the epoch when
/// nothing is stored, inserts the messages with <c>unnest</c> and their keys, moves the head and trims what falls out
/// of the bound; about once a minute an append also sweeps quiet topics (up to <see cref="SweepBatch"/> rows of each
/// kind): expired keys, the messages of topics whose history expired, and topics whose position outlived
/// <see cref="HistoryBounds.PositionLifetime"/>, which a load then no longer returns.
/// The schema lives in <see cref="SchemaFor"/> and is applied on first use (tried again at the next use when that failed).
/// </summary>
public sealed class PostgresHistoryStore(NpgsqlDataSource dataSource, string prefix) : IHistoryStore
{
    /// <summary>Most expired idempotency keys one sweep deletes.</summary>
    public const int SweepBatch = 10_000;

    private static readonly TimeSpan SweepInterval = TimeSpan.FromMinutes(1);

    private readonly string _topics = Identifier(prefix + "_topics");
    private readonly string _messages = Identifier(prefix + "_messages");
    private readonly string _keys = Identifier(prefix + "_idempotency");
    private readonly string _append = Identifier(prefix + "_append");
    private readonly OnceSucceeded _schema = new(() => ApplySchemaAsync(dataSource, prefix));
    private long _nextSweepUnixMs;

    /// <summary>The version of <see cref="SchemaFor"/>, recorded in <c>{prefix}_schema</c> once applied. Raise it with
    /// every change of the schema.</summary>
    public const int SchemaVersion = 5;

    /// <summary>The tables and the append function this store needs. Columns added since a table was first created are
    /// added with <c>ADD COLUMN IF NOT EXISTS</c>, so an older deployment's tables carry on; tables are altered in the
    /// order appends use them (topics, then messages), which keeps a silo applying it from deadlocking with appends of
    /// silos that run an older version.</summary>
    public static string SchemaFor(string prefix)
    {
        var topics = Identifier(prefix + "_topics");
        var messages = Identifier(prefix + "_messages");
        var keys = Identifier(prefix + "_idempotency");
        var append = Identifier(prefix + "_append");
        return $"""
            CREATE TABLE IF NOT EXISTS {topics} (
                topic text PRIMARY KEY,
                epoch text NOT NULL,
                head bigint NOT NULL
            );
            ALTER TABLE {topics} ADD COLUMN IF NOT EXISTS history_expires_at_ms bigint;
            ALTER TABLE {topics} ADD COLUMN IF NOT EXISTS position_expires_at_ms bigint;
            ALTER TABLE {topics} ADD COLUMN IF NOT EXISTS latest_seq bigint;
            ALTER TABLE {topics} ADD COLUMN IF NOT EXISTS latest_published_at_ms bigint;
            ALTER TABLE {topics} ADD COLUMN IF NOT EXISTS latest_payload bytea;
            ALTER TABLE {topics} ADD COLUMN IF NOT EXISTS latest_format smallint;
            ALTER TABLE {topics} ADD COLUMN IF NOT EXISTS latest_properties bytea;
            CREATE INDEX IF NOT EXISTS {Identifier(prefix + "_topics_history_expiry")} ON {topics} (history_expires_at_ms);
            CREATE INDEX IF NOT EXISTS {Identifier(prefix + "_topics_position_expiry")} ON {topics} (position_expires_at_ms);
            CREATE TABLE IF NOT EXISTS {messages} (
                topic text NOT NULL,
                seq bigint NOT NULL,
                published_at_ms bigint NOT NULL,
                payload bytea NOT NULL,
                PRIMARY KEY (topic, seq)
            );
            ALTER TABLE {messages} ADD COLUMN IF NOT EXISTS format smallint NOT NULL DEFAULT 0;
            ALTER TABLE {messages} ADD COLUMN IF NOT EXISTS properties bytea;
            CREATE TABLE IF NOT EXISTS {keys} (
                topic text NOT NULL,
                key text NOT NULL,
                epoch text NOT NULL,
                seq bigint NOT NULL,
                expires_at_ms bigint NOT NULL,
                PRIMARY KEY (topic, key)
            );
            CREATE INDEX IF NOT EXISTS {Identifier(prefix + "_idempotency_expiry")} ON {keys} (expires_at_ms);
            DROP FUNCTION IF EXISTS {append}(text, text, bigint[], bigint[], bytea[], integer, bigint);
            DROP FUNCTION IF EXISTS {append}(text, text, bigint[], bigint[], bytea[], smallint[], integer, bigint, text[], bigint[], bigint, bigint, boolean);
            DROP FUNCTION IF EXISTS {append}(text, text, bigint[], bigint[], bytea[], smallint[], integer, bigint, text[], bigint[], bigint, bigint, bigint, bigint, boolean);
            DROP FUNCTION IF EXISTS {append}(text, text, bigint[], bigint[], bytea[], smallint[], integer, bigint, text[], bigint[], bigint, bigint, bigint, bigint, boolean, boolean);
            DROP FUNCTION IF EXISTS {append}(text, text, bigint[], bigint[], bytea[], smallint[], integer, bigint, text[], bigint[], bigint, bigint, bigint, bigint, boolean, integer);
            CREATE OR REPLACE FUNCTION {append}(
                p_topic text, p_epoch text, p_seqs bigint[], p_times bigint[], p_payloads bytea[], p_formats smallint[],
                p_max integer, p_oldest bigint, p_keys text[], p_key_seqs bigint[], p_key_expires bigint, p_now bigint,
                p_history_expires bigint, p_position_expires bigint, p_sweep boolean, p_latest integer, p_properties bytea[])
            RETURNS TABLE (applied boolean, stored_epoch text, stored_head bigint)
            LANGUAGE plpgsql AS $fn$
            DECLARE
                v_epoch text;
                v_head bigint;
                v_position_expires bigint;
                v_first bigint := p_seqs[1];
                v_n integer := array_length(p_seqs, 1);
                v_last bigint := p_seqs[array_length(p_seqs, 1)];
                -- p_latest: the (1-based) message that becomes the latest value; 0 drops it, -1 keeps it (within the epoch).
                v_new_epoch boolean := true;
            BEGIN
                SELECT t.epoch, t.head, t.position_expires_at_ms INTO v_epoch, v_head, v_position_expires
                    FROM {topics} t WHERE t.topic = p_topic FOR UPDATE;
                IF FOUND AND v_position_expires <= p_now THEN
                    -- Forgotten (its position outlived its time to live): the topic starts over, as if nothing were stored.
                    IF v_first <> 1 THEN
                        RETURN QUERY SELECT false, NULL::text, 0::bigint;
                        RETURN;
                    END IF;
                    UPDATE {topics} SET epoch = p_epoch, head = v_last WHERE topic = p_topic;
                    DELETE FROM {messages} WHERE topic = p_topic;
                ELSIF FOUND THEN
                    IF v_epoch <> p_epoch OR v_head <> v_first - 1 THEN
                        RETURN QUERY SELECT false, v_epoch, v_head;
                        RETURN;
                    END IF;
                    UPDATE {topics} SET head = v_last WHERE topic = p_topic;
                    v_new_epoch := false;
                ELSE
                    IF v_first <> 1 THEN
                        RETURN QUERY SELECT false, NULL::text, 0::bigint;
                        RETURN;
                    END IF;
                    INSERT INTO {topics} (topic, epoch, head) VALUES (p_topic, p_epoch, v_last) ON CONFLICT (topic) DO NOTHING;
                    IF NOT FOUND THEN
                        SELECT t.epoch, t.head INTO v_epoch, v_head FROM {topics} t WHERE t.topic = p_topic;
                        RETURN QUERY SELECT false, v_epoch, v_head;
                        RETURN;
                    END IF;
                    DELETE FROM {messages} WHERE topic = p_topic;
                END IF;
                IF p_max > 0 THEN
                    INSERT INTO {messages} (topic, seq, published_at_ms, payload, format, properties)
                        SELECT p_topic, x.s, x.t, x.p, x.f, x.r FROM unnest(p_seqs, p_times, p_payloads, p_formats, p_properties) AS x(s, t, p, f, r)
                        ON CONFLICT (topic, seq) DO UPDATE
                        SET published_at_ms = EXCLUDED.published_at_ms, payload = EXCLUDED.payload, format = EXCLUDED.format,
                            properties = EXCLUDED.properties;
                END IF;
                UPDATE {topics} SET history_expires_at_ms = p_history_expires, position_expires_at_ms = p_position_expires,
                    latest_seq = CASE WHEN p_latest > 0 THEN p_seqs[p_latest] WHEN p_latest < 0 AND NOT v_new_epoch THEN latest_seq END,
                    latest_published_at_ms = CASE WHEN p_latest > 0 THEN p_times[p_latest] WHEN p_latest < 0 AND NOT v_new_epoch THEN latest_published_at_ms END,
                    latest_payload = CASE WHEN p_latest > 0 THEN p_payloads[p_latest] WHEN p_latest < 0 AND NOT v_new_epoch THEN latest_payload END,
                    latest_format = CASE WHEN p_latest > 0 THEN p_formats[p_latest] WHEN p_latest < 0 AND NOT v_new_epoch THEN latest_format END,
                    latest_properties = CASE WHEN p_latest > 0 THEN p_properties[p_latest] WHEN p_latest < 0 AND NOT v_new_epoch THEN latest_properties END
                    WHERE topic = p_topic;
                -- Seqs are consecutive, so the bound by count is a bound on seq; the bound by age trims from the front.
                DELETE FROM {messages} WHERE topic = p_topic AND (seq <= v_last - p_max OR published_at_ms < p_oldest);
                -- The first append of a key wins while it lives; an expired one is replaced.
                INSERT INTO {keys} AS k (topic, key, epoch, seq, expires_at_ms)
                    SELECT p_topic, x.k, p_epoch, x.s, p_key_expires FROM unnest(p_keys, p_key_seqs) AS x(k, s)
                    ON CONFLICT (topic, key) DO UPDATE
                    SET epoch = EXCLUDED.epoch, seq = EXCLUDED.seq, expires_at_ms = EXCLUDED.expires_at_ms
                    WHERE k.expires_at_ms <= p_now;
                IF p_sweep THEN
                    -- Quiet topics: expired keys, the messages of topics whose history expired, and topics whose position
                    -- did (with what is left of their messages). Rows another append holds are left for the next sweep.
                    DELETE FROM {keys} WHERE ctid IN (
                        SELECT ctid FROM {keys} WHERE expires_at_ms <= p_now LIMIT {SweepBatch} FOR UPDATE SKIP LOCKED);
                    DELETE FROM {messages} WHERE ctid IN (
                        SELECT m.ctid FROM {messages} m JOIN {topics} t ON t.topic = m.topic
                        WHERE t.history_expires_at_ms <= p_now LIMIT {SweepBatch} FOR UPDATE OF m SKIP LOCKED);
                    WITH gone AS (
                        DELETE FROM {topics} WHERE ctid IN (
                            SELECT ctid FROM {topics} WHERE position_expires_at_ms <= p_now LIMIT {SweepBatch} FOR UPDATE SKIP LOCKED)
                        RETURNING topic)
                    DELETE FROM {messages} WHERE topic IN (SELECT topic FROM gone);
                END IF;
                RETURN QUERY SELECT true, p_epoch, v_last;
            END
            $fn$;
            INSERT INTO {Identifier(prefix + "_schema")} (id, version) VALUES (1, {SchemaVersion})
                ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version;
            """;
    }

    /// <summary>Applies <see cref="SchemaFor"/> unless the database already holds <see cref="SchemaVersion"/>. The check
    /// takes no lock, so a silo that starts while others append disturbs nobody; applying it runs in one transaction
    /// under an advisory lock (silos starting together take turns, and the second finds it done), because its
    /// <c>ALTER TABLE</c>s lock the tables that appends use.</summary>
    private static async Task ApplySchemaAsync(NpgsqlDataSource dataSource, string prefix)
    {
        var versions = Identifier(prefix + "_schema");
        await using var connection = await dataSource.OpenConnectionAsync();
        if (await StoredVersionAsync(connection, versions, null) >= SchemaVersion)
        {
            return;
        }

        await using var transaction = await connection.BeginTransactionAsync();
        await using (var prepare = new NpgsqlCommand(
            $"SELECT pg_advisory_xact_lock(hashtext('orleanspush-history-schema')); CREATE TABLE IF NOT EXISTS {versions} (id int PRIMARY KEY, version int NOT NULL)",
            connection, transaction))
        {
            await prepare.ExecuteNonQueryAsync();
        }

        if (await StoredVersionAsync(connection, versions, transaction) < SchemaVersion)
        {
            await using var apply = new NpgsqlCommand(SchemaFor(prefix), connection, transaction);
            await apply.ExecuteNonQueryAsync();
        }

        await transaction.CommitAsync();
    }

    private static async Task<int> StoredVersionAsync(NpgsqlConnection connection, string versions, NpgsqlTransaction? transaction)
    {
        await using var command = new NpgsqlCommand(
            $"SELECT CASE WHEN to_regclass('{versions}') IS NULL THEN 0 ELSE -1 END", connection, transaction);
        if ((int)(await command.ExecuteScalarAsync())! == 0)
        {
            return 0;
        }

        await using var read = new NpgsqlCommand($"SELECT version FROM {versions} WHERE id = 1", connection, transaction);
        return await read.ExecuteScalarAsync() is int version ? version : 0;
    }

    public async Task<StoredHistory?> LoadAsync(string topic, HistoryBounds bounds, CancellationToken cancellationToken = default)
    {
        await _schema.EnsureAsync();
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        string epoch;
        long head;
        TopicMessage? latest = null;
        await using (var meta = new NpgsqlCommand(
            $"SELECT epoch, head, latest_seq, latest_published_at_ms, latest_payload, latest_format, latest_properties FROM {_topics} WHERE topic = $1 AND (position_expires_at_ms IS NULL OR position_expires_at_ms > $2)", connection))
        {
            meta.Parameters.Add(new NpgsqlParameter { Value = topic });
            meta.Parameters.Add(new NpgsqlParameter { Value = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() });
            await using var reader = await meta.ExecuteReaderAsync(cancellationToken);
            if (!await reader.ReadAsync(cancellationToken))
            {
                return null;
            }

            epoch = reader.GetString(0);
            head = reader.GetInt64(1);
            if (!reader.IsDBNull(2) && reader.GetInt64(2) <= head)
            {
                latest = new TopicMessage(topic, epoch, reader.GetInt64(2), (byte[])reader[4], reader.GetInt64(3), (PayloadFormat)reader.GetInt16(5),
                    reader.IsDBNull(6) ? null : (byte[])reader[6]);
            }
        }

        var list = new List<TopicMessage>();
        if (bounds.MaxCount > 0)
        {
            await using var read = new NpgsqlCommand(
                $"SELECT seq, published_at_ms, payload, format, properties FROM (SELECT seq, published_at_ms, payload, format, properties FROM {_messages} WHERE topic = $1 AND seq <= $4 AND published_at_ms >= $2 ORDER BY seq DESC LIMIT $3) newest ORDER BY seq",
                connection);
            read.Parameters.Add(new NpgsqlParameter { Value = topic });
            read.Parameters.Add(new NpgsqlParameter { Value = bounds.OldestAllowedUnixMs(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()) });
            read.Parameters.Add(new NpgsqlParameter { Value = bounds.MaxCount });
            read.Parameters.Add(new NpgsqlParameter { Value = head });
            await using var reader = await read.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                list.Add(new TopicMessage(topic, epoch, reader.GetInt64(0), (byte[])reader[2], reader.GetInt64(1), (PayloadFormat)reader.GetInt16(3),
                    reader.IsDBNull(4) ? null : (byte[])reader[4]));
            }
        }

        return new StoredHistory(epoch, head, HistoryRun.EndingAt(head, list)) { Latest = latest };
    }

    public async Task AppendAsync(string topic, string epoch, IReadOnlyList<TopicMessage> messages, IReadOnlyList<IdempotencyKey> keys, HistoryBounds bounds,
        LatestChange latest, CancellationToken cancellationToken = default)
    {
        if (messages.Count == 0)
        {
            return;
        }

        await _schema.EnsureAsync();
        var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var storedKeys = bounds.DedupeWindow > TimeSpan.Zero ? keys : [];
        var sweep = now >= Interlocked.Read(ref _nextSweepUnixMs);
        if (sweep)
        {
            Interlocked.Exchange(ref _nextSweepUnixMs, now + (long)SweepInterval.TotalMilliseconds);
        }

        await using var command = dataSource.CreateCommand($"SELECT applied, stored_epoch, stored_head FROM {_append}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)");
        command.Parameters.Add(new NpgsqlParameter { Value = topic });
        command.Parameters.Add(new NpgsqlParameter { Value = epoch });
        command.Parameters.Add(new NpgsqlParameter { Value = messages.Select(m => m.Seq).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bigint });
        command.Parameters.Add(new NpgsqlParameter { Value = messages.Select(m => m.PublishedAtUnixMs).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bigint });
        command.Parameters.Add(new NpgsqlParameter { Value = messages.Select(m => m.Data).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
        command.Parameters.Add(new NpgsqlParameter { Value = messages.Select(m => (short)m.Format).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Smallint });
        command.Parameters.Add(new NpgsqlParameter { Value = Math.Max(0, bounds.MaxCount) });
        command.Parameters.Add(new NpgsqlParameter { Value = bounds.OldestAllowedUnixMs(now) });
        command.Parameters.Add(new NpgsqlParameter { Value = storedKeys.Select(k => k.Key).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter { Value = storedKeys.Select(k => k.Seq).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bigint });
        command.Parameters.Add(new NpgsqlParameter { Value = now + (long)bounds.DedupeWindow.TotalMilliseconds });
        command.Parameters.Add(new NpgsqlParameter { Value = now });
        command.Parameters.Add(new NpgsqlParameter { Value = now + (long)bounds.Ttl.TotalMilliseconds });
        command.Parameters.Add(new NpgsqlParameter { Value = now + (long)bounds.PositionLifetime.TotalMilliseconds });
        command.Parameters.Add(new NpgsqlParameter { Value = sweep });
        command.Parameters.Add(new NpgsqlParameter { Value = latest.Keeps ? -1 : latest.Clears ? 0 : latest.Index + 1 });
        command.Parameters.Add(new NpgsqlParameter { Value = messages.Select(m => m.Properties).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        if (!reader.GetBoolean(0))
        {
            throw new HistoryConflictException(topic, epoch, messages[0].Seq - 1, reader.IsDBNull(1) ? null : reader.GetString(1), reader.GetInt64(2));
        }
    }

    public async Task ClearLatestAsync(string topic, string epoch, long head, CancellationToken cancellationToken = default)
    {
        await _schema.EnsureAsync();

        // One statement: the UPDATE is the compare-and-set (it waits for an append holding the row, then checks again);
        // the SELECT only tells "nothing stored" from a conflict.
        await using var command = dataSource.CreateCommand($"""
            WITH live AS (SELECT epoch, head FROM {_topics} WHERE topic = $1 AND (position_expires_at_ms IS NULL OR position_expires_at_ms > $4)),
            cleared AS (
                UPDATE {_topics} SET latest_seq = NULL, latest_published_at_ms = NULL, latest_payload = NULL, latest_format = NULL, latest_properties = NULL
                WHERE topic = $1 AND epoch = $2 AND head = $3 AND (position_expires_at_ms IS NULL OR position_expires_at_ms > $4)
                RETURNING 1)
            SELECT live.epoch, live.head, EXISTS (SELECT 1 FROM cleared) FROM live
            """);
        command.Parameters.Add(new NpgsqlParameter { Value = topic });
        command.Parameters.Add(new NpgsqlParameter { Value = epoch });
        command.Parameters.Add(new NpgsqlParameter { Value = head });
        command.Parameters.Add(new NpgsqlParameter { Value = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        if (await reader.ReadAsync(cancellationToken) && !reader.GetBoolean(2))
        {
            throw new HistoryConflictException(topic, epoch, head, reader.GetString(0), reader.GetInt64(1));
        }
    }

    public async Task<TopicPosition?> FindKeyAsync(string topic, string key, CancellationToken cancellationToken = default)
    {
        await _schema.EnsureAsync();
        await using var command = dataSource.CreateCommand($"SELECT epoch, seq FROM {_keys} WHERE topic = $1 AND key = $2 AND expires_at_ms > $3");
        command.Parameters.Add(new NpgsqlParameter { Value = topic });
        command.Parameters.Add(new NpgsqlParameter { Value = key });
        command.Parameters.Add(new NpgsqlParameter { Value = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        return await reader.ReadAsync(cancellationToken) ? new TopicPosition(reader.GetString(0), reader.GetInt64(1)) : null;
    }

    internal static string Identifier(string name)
    {
        if (name.Length == 0 || name.Length > 60 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c == '_'))
        {
            throw new ArgumentException("A PostgreSQL table prefix is letters, digits and _ only.", nameof(name));
        }

        return name;
    }
}
