using Npgsql;
using NpgsqlTypes;

namespace OrleansPush.Grains.History;

/// <summary>
/// History in PostgreSQL: a row per topic (epoch, head) and a row per message. An append is one batch in one
/// transaction (one round trip): switch epoch when needed, insert the messages with <c>unnest</c>, move the head, and
/// trim what falls out of the bound. The schema lives in <see cref="SchemaFor"/> and is applied at start.
/// </summary>
public sealed class PostgresHistoryStore(NpgsqlDataSource dataSource, string prefix) : IHistoryStore
{
    private readonly string _topics = Identifier(prefix + "_topics");
    private readonly string _messages = Identifier(prefix + "_messages");
    private readonly Lazy<Task> _schema = new(() => ApplySchemaAsync(dataSource, SchemaFor(prefix)));

    /// <summary>The tables this store needs; applied once, on first use.</summary>
    public static string SchemaFor(string prefix) => $"""
        CREATE TABLE IF NOT EXISTS {Identifier(prefix + "_topics")} (
            topic text PRIMARY KEY,
            epoch text NOT NULL,
            head bigint NOT NULL
        );
        CREATE TABLE IF NOT EXISTS {Identifier(prefix + "_messages")} (
            topic text NOT NULL,
            seq bigint NOT NULL,
            published_at_ms bigint NOT NULL,
            payload bytea NOT NULL,
            PRIMARY KEY (topic, seq)
        );
        """;

    private static async Task ApplySchemaAsync(NpgsqlDataSource dataSource, string schema)
    {
        await using var command = dataSource.CreateCommand(schema);
        await command.ExecuteNonQueryAsync();
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
                $"SELECT seq, published_at_ms, payload FROM (SELECT seq, published_at_ms, payload FROM {_messages} WHERE topic = $1 AND published_at_ms >= $2 ORDER BY seq DESC LIMIT $3) newest ORDER BY seq",
                connection);
            read.Parameters.Add(new NpgsqlParameter { Value = topic });
            read.Parameters.Add(new NpgsqlParameter { Value = bounds.OldestAllowedUnixMs(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()) });
            read.Parameters.Add(new NpgsqlParameter { Value = bounds.MaxCount });
            await using var reader = await read.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                list.Add(new TopicMessage(topic, epoch, reader.GetInt64(0), (byte[])reader[2], reader.GetInt64(1)));
            }
        }

        return new StoredHistory(epoch, head, list);
    }

    public async Task AppendAsync(string topic, string epoch, IReadOnlyList<TopicMessage> messages, HistoryBounds bounds, CancellationToken cancellationToken = default)
    {
        if (messages.Count == 0)
        {
            return;
        }

        await _schema.Value;
        var head = messages[^1].Seq;
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await using var batch = new NpgsqlBatch(connection, transaction);

        // A new epoch replaces the old one's messages.
        var dropOld = new NpgsqlBatchCommand($"DELETE FROM {_messages} m USING {_topics} t WHERE m.topic = $1 AND t.topic = $1 AND t.epoch <> $2");
        dropOld.Parameters.Add(new NpgsqlParameter { Value = topic });
        dropOld.Parameters.Add(new NpgsqlParameter { Value = epoch });
        batch.BatchCommands.Add(dropOld);

        var upsert = new NpgsqlBatchCommand($"INSERT INTO {_topics} (topic, epoch, head) VALUES ($1, $2, $3) ON CONFLICT (topic) DO UPDATE SET epoch = EXCLUDED.epoch, head = EXCLUDED.head");
        upsert.Parameters.Add(new NpgsqlParameter { Value = topic });
        upsert.Parameters.Add(new NpgsqlParameter { Value = epoch });
        upsert.Parameters.Add(new NpgsqlParameter { Value = head });
        batch.BatchCommands.Add(upsert);

        if (bounds.MaxCount > 0)
        {
            var insert = new NpgsqlBatchCommand($"INSERT INTO {_messages} (topic, seq, published_at_ms, payload) SELECT $1, s, t, p FROM unnest($2::bigint[], $3::bigint[], $4::bytea[]) AS x(s, t, p) ON CONFLICT (topic, seq) DO UPDATE SET published_at_ms = EXCLUDED.published_at_ms, payload = EXCLUDED.payload");
            insert.Parameters.Add(new NpgsqlParameter { Value = topic });
            insert.Parameters.Add(new NpgsqlParameter { Value = messages.Select(m => m.Seq).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bigint });
            insert.Parameters.Add(new NpgsqlParameter { Value = messages.Select(m => m.PublishedAtUnixMs).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bigint });
            insert.Parameters.Add(new NpgsqlParameter { Value = messages.Select(m => m.Data).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
            batch.BatchCommands.Add(insert);
        }

        // Seqs are consecutive, so the bound by count is a bound on seq; the bound by age trims from the front.
        var trim = new NpgsqlBatchCommand($"DELETE FROM {_messages} WHERE topic = $1 AND (seq <= $2 OR published_at_ms < $3)");
        trim.Parameters.Add(new NpgsqlParameter { Value = topic });
        trim.Parameters.Add(new NpgsqlParameter { Value = head - Math.Max(0, bounds.MaxCount) });
        trim.Parameters.Add(new NpgsqlParameter { Value = bounds.OldestAllowedUnixMs(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()) });
        batch.BatchCommands.Add(trim);

        await batch.ExecuteNonQueryAsync(cancellationToken);
        await transaction.CommitAsync(cancellationToken);
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
