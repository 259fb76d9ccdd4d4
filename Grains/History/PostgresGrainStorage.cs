using Npgsql;
using Orleans.Storage;

namespace OrleansPush.Grains.History;

/// <summary>
/// Grain state in PostgreSQL: one row per grain and state name, written with optimistic concurrency on an ETag (a
/// write whose ETag is stale fails with <see cref="InconsistentStateException"/>, as Orleans expects). Serialization
/// is Orleans' configured grain-storage serializer. The table is created on first use (tried again at the next use when that failed).
/// </summary>
public sealed class PostgresGrainStorage(NpgsqlDataSource dataSource, string prefix, IGrainStorageSerializer serializer) : IGrainStorage
{
    private readonly string _table = prefix + "_grain_state";
    private readonly OnceSucceeded _schema = new(() => CreateSchemaAsync(dataSource, prefix + "_grain_state"));

    public async Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        await _schema.EnsureAsync();
        await using var command = dataSource.CreateCommand($"SELECT etag, data FROM {_table} WHERE grain_id = $1 AND state_name = $2");
        command.Parameters.Add(new NpgsqlParameter { Value = grainId.ToString() });
        command.Parameters.Add(new NpgsqlParameter { Value = stateName });
        await using var reader = await command.ExecuteReaderAsync();
        if (!await reader.ReadAsync())
        {
            grainState.State = Activator.CreateInstance<T>();
            grainState.ETag = null;
            grainState.RecordExists = false;
            return;
        }

        grainState.ETag = reader.GetString(0);
        grainState.State = serializer.Deserialize<T>(new BinaryData((byte[])reader[1]));
        grainState.RecordExists = true;
    }

    public async Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        await _schema.EnsureAsync();
        var etag = Guid.NewGuid().ToString("N");
        var data = serializer.Serialize(grainState.State).ToArray();
        var sql = grainState.ETag is null
            ? $"INSERT INTO {_table} (grain_id, state_name, etag, data) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
            : $"UPDATE {_table} SET etag = $3, data = $4 WHERE grain_id = $1 AND state_name = $2 AND etag = $5";
        await using var command = dataSource.CreateCommand(sql);
        command.Parameters.Add(new NpgsqlParameter { Value = grainId.ToString() });
        command.Parameters.Add(new NpgsqlParameter { Value = stateName });
        command.Parameters.Add(new NpgsqlParameter { Value = etag });
        command.Parameters.Add(new NpgsqlParameter { Value = data });
        if (grainState.ETag is not null)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = grainState.ETag });
        }

        if (await command.ExecuteNonQueryAsync() != 1)
        {
            throw new InconsistentStateException($"The stored state of {grainId} ({stateName}) changed since it was read.", null, grainState.ETag);
        }

        grainState.ETag = etag;
        grainState.RecordExists = true;
    }

    public async Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        await _schema.EnsureAsync();
        await using var command = dataSource.CreateCommand($"DELETE FROM {_table} WHERE grain_id = $1 AND state_name = $2");
        command.Parameters.Add(new NpgsqlParameter { Value = grainId.ToString() });
        command.Parameters.Add(new NpgsqlParameter { Value = stateName });
        await command.ExecuteNonQueryAsync();
        grainState.ETag = null;
        grainState.RecordExists = false;
        grainState.State = Activator.CreateInstance<T>();
    }

    private static async Task CreateSchemaAsync(NpgsqlDataSource dataSource, string table)
    {
        await using var command = dataSource.CreateCommand(
            $"CREATE TABLE IF NOT EXISTS {table} (grain_id text NOT NULL, state_name text NOT NULL, etag text NOT NULL, data bytea NOT NULL, PRIMARY KEY (grain_id, state_name))");
        await command.ExecuteNonQueryAsync();
    }
}
