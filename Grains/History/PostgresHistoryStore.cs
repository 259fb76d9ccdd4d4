using Npgsql;
using NpgsqlTypes;

namespace OrleansPush.Grains.History;

/// <summary>
/// History in PostgreSQL: a row per topic (epoch, head) and a row per message. An append is one call of the
/// <c>{prefix}_append</c> function (one round trip, one transaction): it locks the topic's row, checks the stored epoch
/// and head (the compare-and-set), starts the epoch when nothing is stored, inserts the messages with <c>unnest</c>,
/// moves the head and trims what falls out of the bound. The schema lives in <see cref="SchemaFor"/> and is applied
/// on first use.
/// </summary>
public sealed class PostgresHistoryStore(NpgsqlDataSource dataSource, string prefix) : IHistoryStore
{
    private readonly string _topics = Identifier(prefix + "_topics");
    private readonly string _messages = Identifier(prefix + "_messages");
    private readonly string _append = Identifier(prefix + "_append");
    private readonly Lazy<Task> _schema = new(() => ApplySchemaAsync(dataSource, SchemaFor(prefix)));

    /// <summary>The tables and the append function this store needs; applied once, on first use, under an advisory
    /// lock so that silos starting together do not race each other's DDL.</summary>
    public static string SchemaFor(string prefix)
    {
        var topics = Identifier(prefix + "_topics");
        var messages = Identifier(prefix + "_messages");
        return $"""
            SELECT pg_advisory_xact_lock(hashtext('orleanspush-history-schema'));
            CREATE TABLE IF NOT EXISTS {topics} (
                topic text PRIMARY KEY,
                epoch text NOT NULL,
                head bigint NOT NULL
            );
            CREATE TABLE IF NOT EXISTS {messages} (
                topic text NOT NULL,
                seq bigint NOT NULL,
                published_at_ms bigint NOT NULL,
                payload bytea NOT NULL,
                PRIMARY KEY (topic, seq)
            );
            CREATE OR REPLACE FUNCTION {Identifier(prefix + "_append")}(
                p_topic text, p_epoch text, p_seqs bigint[], p_times bigint[], p_payloads bytea[], p_max integer, p_oldest bigint)
            RETURNS TABLE (applied boolean, stored_epoch text, stored_head bigint)
            LANGUAGE plpgsql AS $fn$
            DECLARE
                v_epoch text;
                v_head bigint;
                v_first bigint := p_seqs[1];
                v_last bigint := p_seqs[array_length(p_seqs, 1)];
            BEGIN
                SELECT t.epoch, t.head INTO v_epoch, v_head FROM {topics} t WHERE t.topic = p_topic FOR UPDATE;
                IF FOUND THEN
                    IF v_epoch <> p_epoch OR v_head <> v_first - 1 THEN
                        RETURN QUERY SELECT false, v_epoch, v_head;
                        RETURN;
                    END IF;
                    UPDATE {topics} SET head = v_last WHERE topic = p_topic;
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
                    INSERT INTO {messages} (topic, seq, published_at_ms, payload)
                        SELECT p_topic, x.s, x.t, x.p FROM unnest(p_seqs, p_times, p_payloads) AS x(s, t, p)
                        ON CONFLICT (topic, seq) DO UPDATE SET published_at_ms = EXCLUDED.published_at_ms, payload = EXCLUDED.payload;
                END IF;
                -- Seqs are consecutive, so the bound by count is a bound on seq; the bound by age trims from the front.
                DELETE FROM {messages} WHERE topic = p_topic AND (seq <= v_last - p_max OR published_at_ms < p_oldest);
                RETURN QUERY SELECT true, p_epoch, v_last;
            END
            $fn$;
            """;
    }

    private static async Task ApplySchemaAsync(NpgsqlDataSource dataSource, string schema)
    {
        await using var connection = await dataSource.OpenConnectionAsync();
        await using var transaction = await connection.BeginTransactionAsync();
        await using (var command = new NpgsqlCommand(schema, connection, transaction))
        {
            await command.ExecuteNonQueryAsync();
        }

        await transaction.CommitAsync();
    }

    public async Task<StoredHistory?> LoadAsync(string topic, HistoryBounds bounds, CancellationToken cancellationToken = default)
    {
        await _schema.Value;
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        string epoch;
        long head;
        await using (var meta = new NpgsqlCommand($"SELECT epoch, head FROM {_topics} WHERE topic = $1", connection))
        {
            meta.Parameters.Add(new NpgsqlParameter { Value = topic });
            await using var reader = await meta.ExecuteReaderAsync(cancellationToken);
            if (!await reader.ReadAsync(cancellationToken))
            {
                return null;
            }

            epoch = reader.GetString(0);
            head = reader.GetInt64(1);
        }

        var list = new List<TopicMessage>();
        if (bounds.MaxCount > 0)
        {
            await using var read = new NpgsqlCommand(
                $"SELECT seq, published_at_ms, payload FROM (SELECT seq, published_at_ms, payload FROM {_messages} WHERE topic = $1 AND seq <= $4 AND published_at_ms >= $2 ORDER BY seq DESC LIMIT $3) newest ORDER BY seq",
                connection);
            read.Parameters.Add(new NpgsqlParameter { Value = topic });
            read.Parameters.Add(new NpgsqlParameter { Value = bounds.OldestAllowedUnixMs(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()) });
            read.Parameters.Add(new NpgsqlParameter { Value = bounds.MaxCount });
            read.Parameters.Add(new NpgsqlParameter { Value = head });
            await using var reader = await read.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                list.Add(new TopicMessage(topic, epoch, reader.GetInt64(0), (byte[])reader[2], reader.GetInt64(1)));
            }
        }

        return new StoredHistory(epoch, head, HistoryRun.EndingAt(head, list));
    }

    public async Task AppendAsync(string topic, string epoch, IReadOnlyList<TopicMessage> messages, HistoryBounds bounds, CancellationToken cancellationToken = default)
    {
        if (messages.Count == 0)
        {
            return;
        }

        await _schema.Value;
        await using var command = dataSource.CreateCommand($"SELECT applied, stored_epoch, stored_head FROM {_append}($1, $2, $3, $4, $5, $6, $7)");
        command.Parameters.Add(new NpgsqlParameter { Value = topic });
        command.Parameters.Add(new NpgsqlParameter { Value = epoch });
        command.Parameters.Add(new NpgsqlParameter { Value = messages.Select(m => m.Seq).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bigint });
        command.Parameters.Add(new NpgsqlParameter { Value = messages.Select(m => m.PublishedAtUnixMs).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bigint });
        command.Parameters.Add(new NpgsqlParameter { Value = messages.Select(m => m.Data).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
        command.Parameters.Add(new NpgsqlParameter { Value = Math.Max(0, bounds.MaxCount) });
        command.Parameters.Add(new NpgsqlParameter { Value = bounds.OldestAllowedUnixMs(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()) });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        if (!reader.GetBoolean(0))
        {
            throw new HistoryConflictException(topic, epoch, messages[0].Seq - 1, reader.IsDBNull(1) ? null : reader.GetString(1), reader.GetInt64(2));
        }
    }

    private static string Identifier(string name)
    {
        if (name.Length == 0 || name.Length > 60 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c == '_'))
        {
            throw new ArgumentException("A PostgreSQL table prefix is letters, digits and _ only.", nameof(name));
        }

        return name;
    }
}
