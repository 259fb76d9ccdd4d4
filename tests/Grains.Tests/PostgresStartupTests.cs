using System.Text;
using Npgsql;
using OrleansPush.Grains.History;

namespace OrleansPush.Grains.Tests;

/// <summary>Issue 11 (named in issue 10's brief): a PostgreSQL that is down when the store is first used must not break
/// the store for good; once it is up, publishing and user state work without a restart.</summary>
public sealed class PostgresStartupTests
{
    [Fact]
    public async Task APublishAndASubscribeSucceedOnceADatabaseThatWasDownAtFirstUseIsUp()
    {
        var real = new NpgsqlConnectionStringBuilder(TestServers.Postgres);
        await using var gate = new TcpGate(real.Host!, real.Port);
        var throughGate = new NpgsqlConnectionStringBuilder(TestServers.Postgres) { Host = "127.0.0.1", Port = gate.Port, Timeout = 5 }.ConnectionString;
        var prefix = "down_" + Guid.NewGuid().ToString("N")[..8];
        await using var dataSource = NpgsqlDataSource.Create(throughGate);
        await using var silo = await StoreSilo.StartAsync(new PostgresHistoryStore(dataSource, prefix), new Dictionary<string, string?>
        {
            ["OrleansPush:Storage:Provider"] = "Postgres",
            ["OrleansPush:Storage:Postgres"] = throughGate,
            ["OrleansPush:Storage:Prefix"] = prefix,
        });
        var topic = silo.Grains.GetGrain<ITopicGrain>("pg-" + Guid.NewGuid().ToString("N"));
        var user = silo.Grains.GetGrain<IUserGrain>("u" + Guid.NewGuid().ToString("N"));

        // Down at first use: both fail (the schema could not be created).
        await Assert.ThrowsAnyAsync<Exception>(() => topic.PublishAsync(Encoding.UTF8.GetBytes("{\"n\":1}"), null).WaitAsync(TimeSpan.FromSeconds(60)));
        await Assert.ThrowsAnyAsync<Exception>(() => user.SubscribeAsync("news").WaitAsync(TimeSpan.FromSeconds(60)));

        gate.Open();
        var position = await topic.PublishAsync(Encoding.UTF8.GetBytes("{\"n\":1}"), null).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(1, position.Seq);
        Assert.True(await user.SubscribeAsync("news").WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.Equal(["news"], await user.GetSubscriptionsAsync());
    }
}
