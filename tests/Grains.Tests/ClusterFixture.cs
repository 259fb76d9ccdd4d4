using Microsoft.Extensions.Configuration;
using Orleans.TestingHost;

namespace OrleansPush.Grains.Tests;

/// <summary>One two-silo test cluster for the grain tests, with a small-history namespace and a short lease.</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    public static readonly TimeSpan Lease = TimeSpan.FromSeconds(2);

    public TestCluster Cluster { get; private set; } = null!;

    public IGrainFactory Grains => Cluster.Client;

    public async Task InitializeAsync()
    {
        var builder = new TestClusterBuilder(2);
        builder.AddSiloBuilderConfigurator<SiloConfigurator>();
        Cluster = builder.Build();
        await Cluster.DeployAsync();
    }

    public async Task DisposeAsync() => await Cluster.StopAllSilosAsync();

    internal static IConfiguration Settings() => new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
    {
        ["OrleansPush:Topics:Namespaces:small:HistorySize"] = "5",
        ["OrleansPush:Routing:Lease"] = Lease.ToString(),
        ["OrleansPush:Topics:DedupeWindow"] = "00:01:00",
    }).Build();

    private sealed class SiloConfigurator : ISiloConfigurator
    {
        public void Configure(ISiloBuilder siloBuilder) => siloBuilder.AddOrleansPushGrains(Settings());
    }
}

[CollectionDefinition(Name)]
public sealed class ClusterCollection : ICollectionFixture<ClusterFixture>
{
    public const string Name = "cluster";
}
