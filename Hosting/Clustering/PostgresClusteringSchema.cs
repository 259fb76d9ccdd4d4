using Microsoft.Extensions.Hosting;
using Npgsql;

namespace OrleansPush.Hosting.Clustering;

/// <summary>
/// The membership table of ADO.NET clustering on PostgreSQL (<c>PostgresClustering.sql</c>, embedded in this
/// assembly). The Orleans packages do not ship their SQL, so the project applies its own before Orleans reads it.
/// <para>Guarantees: idempotent (creates only what is missing, rewrites the queries to the same text); safe to run from
/// many silos and gateways at once (a transaction-scoped advisory lock serialises them); either all of it applies or
/// nothing does.</para>
/// </summary>
public static class PostgresClusteringSchema
{
    /// <summary>The ADO.NET invariant Orleans uses to load Npgsql.</summary>
    public const string Invariant = "Npgsql";

    private const long AdvisoryLockKey = 0x4f50_436c_7573; // "OPClus"

    public static string Script { get; } = LoadScript();

    /// <summary>Applies the schema, retrying until <paramref name="cancellationToken"/> fires while the database is
    /// not reachable yet (a pod may start before its database).</summary>
    public static async Task EnsureAsync(string connectionString, CancellationToken cancellationToken)
    {
        var delay = TimeSpan.FromMilliseconds(250);
        while (true)
        {
            try
            {
                await ApplyAsync(connectionString, cancellationToken);
                return;
            }
            catch (NpgsqlException ex) when (ex.IsTransient && !cancellationToken.IsCancellationRequested)
            {
                await Task.Delay(delay, cancellationToken);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(5).Ticks));
            }
        }
    }

    private static async Task ApplyAsync(string connectionString, CancellationToken cancellationToken)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await using (var command = new NpgsqlCommand("SELECT pg_advisory_xact_lock(@key)", connection, transaction))
        {
            command.Parameters.AddWithValue("key", AdvisoryLockKey);
            await command.ExecuteNonQueryAsync(cancellationToken);
        }

        await using (var command = new NpgsqlCommand(Script, connection, transaction))
        {
            await command.ExecuteNonQueryAsync(cancellationToken);
        }

        await transaction.CommitAsync(cancellationToken);
    }

    private static string LoadScript()
    {
        var assembly = typeof(PostgresClusteringSchema).Assembly;
        var name = assembly.GetManifestResourceNames().Single(n => n.EndsWith("PostgresClustering.sql", StringComparison.Ordinal));
        using var stream = assembly.GetManifestResourceStream(name)!;
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}

/// <summary>Applies <see cref="PostgresClusteringSchema"/> before Orleans reads the membership table: on a silo as the
/// first stage of its lifecycle, on a gateway as a hosted service registered ahead of the Orleans client.</summary>
public sealed class PostgresClusteringStartup(string connectionString) : ILifecycleParticipant<ISiloLifecycle>, IHostedService
{
    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(PostgresClusteringStartup), ServiceLifecycleStage.First, ct => PostgresClusteringSchema.EnsureAsync(connectionString, ct));

    public Task StartAsync(CancellationToken cancellationToken) => PostgresClusteringSchema.EnsureAsync(connectionString, cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
