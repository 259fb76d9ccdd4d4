using System.Text;
using Microsoft.Extensions.Configuration;
using Orleans.TestingHost;

namespace OrleansPush.Grains.Tests;

/// <summary>A two-silo cluster on the Redis store: what a silo crash may and may not cost.</summary>
public sealed class SiloCrashTests : IAsyncLifetime
{
    private TestCluster _cluster = null!;

    public async Task InitializeAsync()
    {
        var builder = new TestClusterBuilder(2);
        builder.AddSiloBuilderConfigurator<RedisSilo>();
        _cluster = builder.Build();
        await _cluster.DeployAsync();
    }

    public async Task DisposeAsync() => await _cluster.StopAllSilosAsync();

    [Fact]
    public async Task KilledSilosTopicsReactivateWithTheirEpochAndLoseNothingAcknowledged()
    {
        var topics = Enumerable.Range(0, 24).Select(i => $"crash-{i}-{Guid.NewGuid():N}").ToArray();
        var acknowledged = topics.ToDictionary(t => t, _ => new List<TopicPosition>());
        var epochs = new Dictionary<string, string>();

        async Task PublishRoundAsync(int round)
        {
            foreach (var topic in topics)
            {
                // A publisher retries what failed; only what was answered counts as acknowledged.
                for (var attempt = 0; attempt < 60; attempt++)
                {
                    try
                    {
                        var position = await _cluster.Client.GetGrain<ITopicGrain>(topic).PublishAsync(Encoding.UTF8.GetBytes($"{{\"r\":{round}}}"), null);
                        acknowledged[topic].Add(position);
                        break;
                    }
                    catch (Exception ex) when (ex is not Xunit.Sdk.XunitException)
                    {
                        await Task.Delay(250);
                    }
                }
            }
        }

        for (var round = 0; round < 5; round++)
        {
            await PublishRoundAsync(round);
        }

        foreach (var topic in topics)
        {
            epochs[topic] = acknowledged[topic][0].Epoch;
        }

        await _cluster.KillSiloAsync(_cluster.SecondarySilos[0]);
        for (var round = 5; round < 10; round++)
        {
            await PublishRoundAsync(round);
        }

        foreach (var topic in topics)
        {
            var positions = acknowledged[topic];
            Assert.Equal(10, positions.Count);
            Assert.All(positions, p => Assert.Equal(epochs[topic], p.Epoch));
            Assert.Equal(Enumerable.Range(1, 10).Select(i => (long)i), positions.Select(p => p.Seq));
            var history = await _cluster.Client.GetGrain<ITopicGrain>(topic).ReadAsync(0, 100);
            Assert.Equal(epochs[topic], history.Epoch);
            Assert.Equal(Enumerable.Range(1, 10).Select(i => (long)i), history.Messages.Select(m => m.Seq));
        }
    }

    /// <summary>Defect 10 of issue 10: an idempotency key is kept durably beside its message, so a publisher that
    /// retries after the topic's silo died is answered with the first position and nothing is published twice.</summary>
    [Fact]
    public async Task ARetryAfterTheTopicsSiloWasKilledReturnsTheFirstPositionAndPublishesNothing()
    {
        var topics = Enumerable.Range(0, 24).Select(i => $"idem-{i}-{Guid.NewGuid():N}").ToArray();
        var first = new Dictionary<string, TopicPosition>();
        foreach (var topic in topics)
        {
            first[topic] = await _cluster.Client.GetGrain<ITopicGrain>(topic).PublishAsync(Encoding.UTF8.GetBytes("{\"order\":1}"), "key-" + topic);
        }

        var victim = _cluster.SecondarySilos[0];
        var management = _cluster.Client.GetGrain<IManagementGrain>(0);
        var moved = new List<string>();
        foreach (var topic in topics)
        {
            if (victim.SiloAddress.Equals(await management.GetActivationAddress(_cluster.Client.GetGrain<ITopicGrain>(topic))))
            {
                moved.Add(topic);
            }
        }

        Assert.NotEmpty(moved);
        await _cluster.KillSiloAsync(victim);

        foreach (var topic in topics)
        {
            var retried = await RetryAsync(() => _cluster.Client.GetGrain<ITopicGrain>(topic).PublishAsync(Encoding.UTF8.GetBytes("{\"order\":1}"), "key-" + topic));
            Assert.Equal(first[topic], retried);
            var history = await _cluster.Client.GetGrain<ITopicGrain>(topic).ReadAsync(0, 100);
            Assert.Equal(1, history.Head);
            Assert.Single(history.Messages);
        }
    }

    /// <summary>What a publisher does while a silo's grains move: retry what failed, for a bounded time.</summary>
    private static async Task<T> RetryAsync<T>(Func<Task<T>> call)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await call().WaitAsync(TimeSpan.FromSeconds(10));
            }
            catch (Exception ex) when (ex is not Xunit.Sdk.XunitException && attempt < 60)
            {
                await Task.Delay(250);
            }
        }
    }

    private sealed class RedisSilo : ISiloConfigurator
    {
        public void Configure(ISiloBuilder siloBuilder)
        {
            var settings = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["OrleansPush:Storage:Provider"] = "Redis",
                ["OrleansPush:Storage:Redis"] = TestServers.Redis,
                ["OrleansPush:Storage:Prefix"] = "crash" + Environment.ProcessId,
                ["OrleansPush:Cluster:Membership:ProbeTimeout"] = "00:00:01",
                ["OrleansPush:Cluster:Membership:NumMissedProbesLimit"] = "2",
            }).Build();
            siloBuilder.AddOrleansPushGrains(settings);
        }
    }
}
